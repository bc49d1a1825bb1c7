"""The fused recurrence, cuDNN's split of the work, shared by the LSTM and GRU kernels.

Forward: the input projection is one matmul per block of ``_CHUNK`` steps (``gx``), taken out of
the per-step chain; each step does only the recurrent matmul and the gate math. Backward
(``custom_vjp``): a reverse-time loop turns output and state gradients into pre-activation
gradients (``dgx``, ``dhr``) with one small matmul per step; the weight, bias and input gradients
are then large matmuls over all steps. On the CPU both loops run the batch as two independent
lanes of rows, one per core (``_lanes``); the forward saves each lane's residuals apart, for the
backward's lane to read and overwrite. What it saves of the pre-activations is ``Spec.pieces``:
``gx + hr`` for cells that only see the sum, ``gx`` and ``hr`` otherwise, or (the reset-after GRU)
``Spec.pack``'s column blocks, whose gradients the weight gradients use in place.

A kernel supplies ``pointwise(gx_t, hr_t, state, s_t) -> (y, new_state)``, the gate math after the
matmuls, and ``rec_input(state) -> h``, the recurrent matmul's input. A cell whose second
recurrent product depends on the first (the reset-before GRU: ``(r * h) @ U_h``) also supplies
``mid(gx_t, hr_t, state) -> a_t``; the loop computes ``s_t = a_t @ u2`` and saves ``a_t``, so that
``du2`` too is one large matmul after the backward loop. Otherwise ``s_t`` is ``None``. Gate
derivatives come from ``jax.vjp`` of these functions, so every activation works; a kernel may
supply a closed form instead (``Spec.pointwise_vjp``: the LSTM and the reset-after GRU with
tanh/sigmoid). Masks follow DESIGN.md (a masked step carries the state and repeats the last
output, or outputs zeros with ``zero_output``). Everything is time-major inside (``xs`` is ``(T, B, n_in)``), except the
outputs-only forward, which reads and writes batch-major blocks in place (``batch_major``).

A dropout mask has a leading gate axis (``jrnn._dropout``): with one entry it multiplies the
matmul's input, with ``G`` entries the weight is split into ``G`` gate blocks, one mask each.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from functools import partial, reduce
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


# Steps per loop iteration in the forward, each block's input projection one matmul. On XLA:CPU
# projecting all steps up front wrote a (T, B, G*u) array that the loop then read back: at (32, 128,
# 128, 256) that cost more than the matmul saved. Blocks of 8 keep it in cache (bench/results/cpu.md).
# Re-measured in shuffled order for the outputs-only forward: 47 ms against 24, the single product
# into a fresh 16 MB buffer at 91 GFLOPS (page faults), and the loop's gate math reading gx from
# memory several times slower. Blocks of 16 there measured the same as 8 (a fixed order had said -8%).
# The saving forward too, where that array would replace the zero-filled buffer of saved
# pre-activations (updated in place): fwd+bwd 22-37% slower at (16, 64, 32, 64) and (32, 128, 128,
# 256), LSTM and GRU (interleaved A/B); the one large matmul into a fresh 16 MB buffer took 17.7 ms
# where the 8-step blocks take ~8. At (64, 256, 256, 512) blocks of 2 or 4 steps were no faster.
_CHUNK = 8
# Steps per iteration of the backward loop. At (32, 128, 128, 256) on the 2-core machine the
# backward took 58 ms at 1, 70 ms at 2, 72 ms at 4 and 106 ms at 8 (with the pre-transposed u).
# Why: unrolled, XLA:CPU copies the cheap product that carries the state gradient back (d_c * f,
# d_h * z) into every later step's fusion, so each step's gate math redoes the steps before it in
# the block. With two lanes the one-step body runs both lanes' gate math on one thread: XLA:CPU's
# executor runs ready operations on the thread that made them ready and hands work to the other
# thread only when more than 8 are ready. A blocked backward like the forward (8 unrolled steps,
# that product written as a division, which XLA does not copy) ran the lanes side by side, but only
# the GRU at (32, 128, 128, 256) gained (bench/results/ab_fused.md, "Tried, not kept").
_UNROLL = 1
# Per-step multiply-adds of the recurrent products (batch x u.size) from which the loops run as two
# lanes (``_lanes``). Two lanes against one, shuffled rounds on the 2-core machine: 5-30% faster at
# (8, 256) and (32, 256) batch x units (2.1M and 8.4M), 3-6% slower at (16, 128) (1M), and at 0.8-1M
# mixed: LSTM (64, 64) 10-18% faster, GRU (64, 64) 3-5% slower.
_LANE_MIN_MACS = 1 << 21


class Spec(NamedTuple):
    """The cell-specific part of a fused kernel (hashable: a static argument)."""

    pointwise: Callable  # (gx_t, hr_t, state, s_t) -> (y, new_state); float32 in, float32 out
    rec_input: Callable  # state -> (B, units)
    mid: Callable | None = None  # (gx_t, hr_t, state) -> a_t, the second recurrent matmul's input
    additive: bool = False  # pointwise depends on gx_t + hr_t only: save the sum, one gradient for both
    # Optional, cells without mid: pointwise's vjp in a closed form that XLA fuses into fewer
    # operations than jax.vjp's, (pieces_t, state, d_y, d_new_state) -> (d_pieces, d_state), where
    # pieces_t is the step's saved ``pieces``, and d_pieces their gradients.
    pointwise_vjp: Callable | None = None
    # Optional, with pointwise_vjp: pointwise_vjp's pieces as column blocks of the step's
    # pre-activations, ``(gx_t, hr_t) -> (piece, ...)``, and which pieces' gradients, joined in
    # order, make up gx's and hr's gradients: ``parts = (gx_pieces, hr_pieces)``. Blocks that gx
    # and hr enter only as a sum are one piece, the sum (the reset-after GRU's z and r). The forward
    # saves these pieces instead of gx and hr: for the tanh/sigmoid reset-after GRU 4 units a step
    # against 6, in more, smaller operations (other activations: ``_fused._on_gx_and_hr``). Once
    # saved so only from 8 MiB up (5% slower packed at (16, 64, 32, 64) then); with the backward's
    # writes ordered, packed at every size its fwd+bwd took 3-19% less at 7 of 11 sizes with batch
    # 1-128 and 8-100 units, was within 2% at 3, and at (1, 100, 8, 16), 0.25 ms a call, -2% in one
    # run and +9% in another (bench/results/ab_fused.md). At (32, 128, 128, 256) it keeps the
    # fwd+bwd's temporary buffer at 26.4 MiB (34.0 with gx and hr), under the 32 MiB line where
    # glibc maps it afresh every call (bench/results/cpu_malloc.md).
    pack: Callable | None = None
    parts: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    # Optional, cells with mid: the gate math's vjp in a closed form, in two stages around the
    # second product's ``d_a = d_s @ u2.T``: ``first(gx_t, hr_t, state, s_t, d_y, d_new) -> (d_s,
    # partial)`` and ``second(gx_t, hr_t, state, d_a, partial) -> (d_gx, d_hr, d_state)``, the
    # gradients of ``pointwise`` and ``mid`` together.
    mid_vjps: tuple[Callable, Callable] | None = None

    def pieces(self, gx_t, hr_t):
        """What the forward saves of a step for the backward: a tuple of ``(B, k)`` arrays."""
        if self.pack is not None:
            return self.pack(gx_t, hr_t)
        return (gx_t + hr_t,) if self.additive else (gx_t, hr_t)

    def grad_parts(self, d_pieces):
        """``(d_gx, d_hr)`` as tuples of column blocks, from the gradients of ``pieces``."""
        gx_parts, hr_parts = self.parts if self.pack is not None else (((0,), (0,)) if self.additive else ((0,), (1,)))
        return tuple(d_pieces[i] for i in gx_parts), tuple(d_pieces[i] for i in hr_parts)


class Weights(NamedTuple):
    """The kernel's weights: ``x @ w + b_in``, ``h @ u + b_rec``, and ``a @ u2`` (``mid`` cells)."""

    w: jax.Array
    u: jax.Array
    u2: jax.Array | None
    b_in: jax.Array | None
    b_rec: jax.Array | None


class Dropout(NamedTuple):
    """Dropout masks ``(count, B, n)`` for the inputs, ``h @ u`` and ``a @ u2``; ``None`` if off."""

    inputs: jax.Array | None
    rec: jax.Array | None
    rec2: jax.Array | None


def _gate_split(a, gates):  # (..., G*u) -> (..., G, u)
    return a.reshape(*a.shape[:-1], gates, a.shape[-1] // gates)


def _lead(m, x):
    """A ``(B, n)`` mask with unit axes in front so that it multiplies ``x`` (rank promotion off)."""
    return m.reshape((1,) * (x.ndim - m.ndim) + m.shape)


def _project(x, w, masks):
    """``x @ w`` with an optional dropout mask ``(count, B, n)``: ``(..., B, G*u)``, f32."""
    if masks is None:
        return jnp.matmul(x, w, preferred_element_type=jnp.float32)
    m = masks.astype(x.dtype)
    if m.shape[0] == 1:
        return jnp.matmul(x * _lead(m[0], x), w, preferred_element_type=jnp.float32)
    w_g = _gate_split(w, m.shape[0])  # (n, G, u)
    out = jnp.einsum("...bn,gbn,ngu->...bgu", x, m, w_g, preferred_element_type=jnp.float32)
    return out.reshape(*out.shape[:-2], -1)


def _gate_masks(masks, start, width, total):
    """The masks of output columns ``[start, start + width)`` of ``total``: per-gate masks cut to
    the gates those columns span (whole gates), a single mask or ``None`` as it is."""
    if masks is None or masks.shape[0] == 1:
        return masks
    gate = total // masks.shape[0]
    assert start % gate == 0 and width % gate == 0, "column blocks are whole gates"
    return masks[start // gate : (start + width) // gate]


def _column_blocks(d_parts):
    """``[(d, start, width), ...]`` for column blocks of one output gradient, and its width."""
    widths = [d.shape[-1] for d in d_parts]
    starts = itertools.accumulate(widths[:-1], initial=0)
    return list(zip(d_parts, starts, widths, strict=True)), sum(widths)


def _project_dw(x, masks, d_parts):
    """The weight gradient of ``_project`` over all leading axes (f32); the output gradient comes
    as column blocks ``d_parts``, one product each (no copy of them joined)."""
    xf = _after(x, d_parts[0]).astype(jnp.float32)
    if masks is None or masks.shape[0] == 1:
        xm = xf if masks is None else xf * _lead(masks[0].astype(jnp.float32), xf)
        # x.T @ d as a 2-D product with x.T made explicitly. Left to fold the transpose into the
        # dot, XLA:CPU transposed d (T, B, G*u) to batch-major instead of the smaller x.
        xm_t = jax.lax.optimization_barrier(xm.reshape(-1, x.shape[-1]).T)
        return _cat([jnp.matmul(xm_t, d.reshape(-1, d.shape[-1])) for d in d_parts])
    batch_axes = "tb" if x.ndim == 3 else "b"
    blocks, total = _column_blocks(d_parts)
    dws = []
    for d, start, width in blocks:
        m = _gate_masks(masks, start, width, total).astype(jnp.float32)
        d_g = _gate_split(d, m.shape[0])  # (..., B, G, u)
        dws.append(jnp.einsum(f"{batch_axes}n,gbn,{batch_axes}gu->ngu", xf, m, d_g).reshape(x.shape[-1], -1))
    return _cat(dws)


def _after(a, b):
    """``a``, unchanged, as a value that XLA computes only once ``b`` exists.

    XLA:CPU made the weight gradients' transposed copies of the inputs (``x.T`` in ``_project_dw``)
    at the start of the program, so they sat in memory through both loops. At (32, 128, 128, 256)
    that put the LSTM's fwd+bwd temporary buffer at 32.4 MiB, just over the 32 MiB above which
    glibc maps an allocation afresh on every call and the kernel faults it in page by page
    (~8,400 faults a call); after the loops it is 30.4 MiB, and fwd+bwd 8-9% faster
    (bench/results/cpu_malloc.md). The select never takes the zeros (no number is both NaN and
    finite), but XLA cannot tell, so the copies wait for ``b``. An ``optimization_barrier`` over
    both moved nothing.
    """
    if b.size == 0:
        return a
    first = b.reshape(-1)[0]
    return jnp.where(jnp.isnan(first) & jnp.isfinite(first), jnp.zeros_like(a), a)


def _project_dx(d_out, w_t, masks):
    """The input gradient of ``_project``; ``w_t`` is ``w.T`` in float32, made once outside loops.

    XLA:CPU ran ``d @ w.T`` inside a loop ~25% slower than a product with a transposed copy.
    """
    if masks is None or masks.shape[0] == 1:
        dx = jnp.matmul(d_out, w_t)
        return dx if masks is None else dx * _lead(masks[0].astype(jnp.float32), dx)
    m = masks.astype(jnp.float32)
    w_g = w_t.reshape(m.shape[0], -1, w_t.shape[-1])  # (G, u, n)
    return jnp.einsum("...bgu,gun,gbn->...bn", _gate_split(d_out, m.shape[0]), w_g, m)


def _project_dx_parts(d_parts, w_t, masks):
    """``_project_dx`` of an output gradient given as column blocks: a product per block, summed."""
    blocks, total = _column_blocks(d_parts)
    dxs = [
        _project_dx(d, w_t[start : start + width], _gate_masks(masks, start, width, total))
        for d, start, width in blocks
    ]
    return reduce(jnp.add, dxs)


def _add_bias(a, b):
    """``a + b`` with the bias broadcast over the leading axes explicitly (no rank promotion)."""
    return a + b.astype(jnp.float32).reshape((1,) * (a.ndim - 1) + b.shape)


def _where(m, new, old):
    return jax.tree.map(lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (n.ndim - m.ndim)), n, o), new, old)


def _recurrent(spec, wt, drop, u32, u2_32, gx_t, state):
    """The step's recurrent products: ``hr = h @ u + b_rec`` and, for ``mid`` cells, ``a`` and ``a @ u2``."""
    hr = _project(spec.rec_input(state), u32, drop.rec)
    if wt.b_rec is not None:
        hr = _add_bias(hr, wt.b_rec)
    if spec.mid is None:
        return hr, None, None
    a = spec.mid(gx_t, hr, state)
    return hr, a, _project(a, u2_32, drop.rec2)


def _cat(blocks):
    """Column blocks joined (one block is returned as is)."""
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)


def _f32(a):
    return None if a is None else a.astype(jnp.float32)


def _chunks(total, reverse):
    """``[(start, stop), ...]`` in processing order: whole ``_CHUNK``-step blocks, then the rest."""
    whole = total - total % _CHUNK
    segments = [(0, whole), (whole, total)] if not reverse else [(total - whole, total), (0, total - whole)]
    return [(lo, hi) for lo, hi in segments if hi > lo]


def _block_steps(lo, hi):
    """Steps per block of the segment ``[lo, hi)`` from ``_chunks``: ``_CHUNK``, or the remainder."""
    return _CHUNK if (hi - lo) % _CHUNK == 0 else hi - lo


def _blocked(a, lo, hi):
    """``a[lo:hi]`` as ``(blocks, steps, ...)``: whole chunks, or one block for the remainder."""
    if a is None:
        return None
    steps = _block_steps(lo, hi)
    return a[lo:hi].reshape((hi - lo) // steps, steps, *a.shape[1:])


def _lanes(batch, wt):
    """Row ranges ``[(lo, hi), ...]`` of the batch that the loops run as independent chains (lanes).

    Rows of a recurrence never mix, so each half of the batch can run its own chain of steps. On
    XLA:CPU one chain splits every step's small matmul and gate math across the threads and waits
    for all of them at each; two chains run side by side, one per core, with single-threaded
    products and nothing to wait for. At (32, 128, 128, 256) the LSTM recurrence took ~90 us a
    step as two lanes and ~150 as one (profile: thread-pool waits of 30-40 us per product). The
    block's input projection stays one product for the whole batch. Other backends, one core, or
    steps below ``_LANE_MIN_MACS`` multiply-adds: one lane.
    """
    work = batch * sum(u.size for u in (wt.u, wt.u2) if u is not None)
    if jax.default_backend() != "cpu" or batch < 2 or work < _LANE_MIN_MACS or _cores() < 2:
        return [(0, batch)]
    half = (batch + 1) // 2
    return [(0, half), (half, batch)]


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _rows(tree, lo, hi, axis=0):
    """``tree``'s arrays restricted to batch rows ``[lo, hi)`` on ``axis`` (``None`` leaves stay)."""

    def cut(a):
        return a if (lo, hi) == (0, a.shape[axis]) else jax.lax.slice_in_dim(a, lo, hi, axis=axis)

    return jax.tree.map(cut, tree)


def _join(pieces, axis=0):
    """The lanes' pytrees joined back along the batch ``axis`` (a single lane is returned as is)."""
    if len(pieces) == 1:
        return pieces[0]
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=axis), *pieces)


def _forward(spec, reverse, zero_output, wt, xs, state0, mask, drop, save=True, batch_major=False):
    """``(ys, final_state, residuals)``; ``xs`` and ``ys`` are time-major unless ``batch_major``.

    ``batch_major`` (outputs only: ``save=False``) reads each block's inputs from ``(B, T, n)`` and
    writes its outputs into ``(B, T, units)`` in place, instead of transposing whole sequences in
    and out (1-8% of the forward across bench/cpu.py's sizes). ``mask`` is ``(T, B)`` either way.
    """
    assert not (save and batch_major), "the saving forward is time-major"
    u32, u2_32 = _f32(wt.u), _f32(wt.u2)
    state0 = jax.tree.map(lambda a: a.astype(jnp.float32), state0)

    lanes = _lanes(xs.shape[0] if batch_major else xs.shape[1], wt)
    lane_drops = [_rows(drop, lo, hi, axis=1) for lo, hi in lanes]

    def lane_step(drop, carry, inputs):
        state, prev_y = carry
        gx_t, m_t = inputs
        hr, a, s = _recurrent(spec, wt, drop, u32, u2_32, gx_t, state)
        y, new = spec.pointwise(gx_t, hr, state, s)
        if m_t is not None:
            new = _where(m_t, new, state)
            y = jnp.where(m_t[:, None], y, jnp.zeros_like(y) if zero_output else prev_y)
        if not save:
            return (new, y), (y, None)
        return (new, y), (y, (spec.pieces(gx_t, hr), state, a, s))

    def step(carry, inputs):  # carry and gx_t: one per lane; outputs joined, residuals per lane
        gx_t, m_t = inputs
        results = [
            lane_step(d, c, (g, _rows(m_t, lo, hi)))
            for (lo, hi), d, c, g in zip(lanes, lane_drops, carry, gx_t, strict=True)
        ]
        y = _join([y for _, (y, _) in results])
        return tuple(c for c, _ in results), (y, tuple(res for _, (_, res) in results))

    def chunk(carry, inputs):  # the input projection of _CHUNK steps at once, kept in cache
        x_k, m_k = inputs
        gx_k = _project(x_k, wt.w, drop.inputs)
        if wt.b_in is not None:
            gx_k = _add_bias(gx_k, wt.b_in)
        gx_k = tuple(_rows(gx_k, lo, hi, axis=1) for lo, hi in lanes)
        return jax.lax.scan(step, carry, (gx_k, m_k), reverse=reverse, unroll=True)

    def first_output(x_t, state):  # the shape of y; xs[0] need not exist (T == 0)
        gx_t = _project(x_t, wt.w, drop.inputs)
        hr, _, s = _recurrent(spec, wt, drop, u32, u2_32, gx_t, state)
        return spec.pointwise(gx_t, hr, state, s)[0]

    x_spec = jax.ShapeDtypeStruct(xs.shape[::2] if batch_major else xs.shape[1:], xs.dtype)
    carry = (state0, jnp.zeros(jax.eval_shape(first_output, x_spec, state0).shape, jnp.float32))
    carry = tuple(_rows(carry, lo, hi) for lo, hi in lanes)
    if batch_major:
        ys, carry = _batch_major_blocks(chunk, reverse, xs, mask, carry)
        return ys, _join(carry)[0], ()
    pieces = {}
    for lo, hi in _chunks(xs.shape[0], reverse):
        carry, out = jax.lax.scan(chunk, carry, (_blocked(xs, lo, hi), _blocked(mask, lo, hi)), reverse=reverse)
        pieces[lo] = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)
    if not pieces:  # T == 0: empty outputs with the step's shapes
        gx = jax.eval_shape(lambda x: _project(x, wt.w, drop.inputs), x_spec)
        gx_spec = tuple(jax.ShapeDtypeStruct((hi - lo, *gx.shape[1:]), gx.dtype) for lo, hi in lanes)
        m_spec = None if mask is None else jax.ShapeDtypeStruct(mask.shape[1:], mask.dtype)
        out = jax.eval_shape(step, carry, (gx_spec, m_spec))[1]
        pieces[0] = jax.tree.map(lambda a: jnp.zeros((0, *a.shape), a.dtype), out)
    ys, res = jax.tree.map(lambda *a: jnp.concatenate(a), *(pieces[lo] for lo in sorted(pieces)))
    return ys, _join(carry)[0], res


def _batch_major_blocks(chunk, reverse, xs, mask, carry):
    """``_forward``'s block loop on ``(B, T, n)`` inputs: ``(ys (B, T, units), final carry)``."""
    batch, total = xs.shape[:2]
    ys = jnp.zeros((batch, total, carry[0][1].shape[-1]), jnp.float32)
    for lo, hi in _chunks(total, reverse):
        steps = _block_steps(lo, hi)

        def block(c, inputs, lo=lo, steps=steps):
            carry, ys = c
            k, m_k = inputs
            start = lo + k * steps
            x_k = jnp.swapaxes(jax.lax.dynamic_slice_in_dim(xs, start, steps, axis=1), 0, 1)
            carry, (y_k, _) = chunk(carry, (x_k, m_k))
            return (carry, jax.lax.dynamic_update_slice_in_dim(ys, jnp.swapaxes(y_k, 0, 1), start, axis=1)), None

        blocks = jnp.arange((hi - lo) // steps)
        (carry, ys), _ = jax.lax.scan(block, (carry, ys), (blocks, _blocked(mask, lo, hi)), reverse=reverse)
    return ys, carry


def _backward(spec, reverse, zero_output, wt, xs, mask, drop, res, dys, dfinal):
    """``(d_wt, dxs, d_state0)``; ``res`` holds the forward's residuals, one tuple per lane."""
    assert spec.pointwise_vjp is None or spec.mid is None, "Spec.pointwise_vjp is for cells without mid"
    rows = [jax.tree.leaves(prev_states)[0].shape[1] for _, prev_states, _, _ in res]  # the forward's lanes
    lanes = list(itertools.pairwise([0, *itertools.accumulate(rows)]))
    lane_drops = [_rows(drop, lo, hi, axis=1) for lo, hi in lanes]
    u32, u2_32 = _f32(wt.u), _f32(wt.u2)
    u_t, u2_t = u32.T, None if u2_32 is None else u2_32.T

    def lane_step(drop, carry, inputs):
        d_state, d_prev_y, bufs = carry
        dy_t, state_prev, s_t, m_t, t = inputs
        pieces_t = tuple(jax.lax.dynamic_index_in_dim(b, t, keepdims=False) for b in bufs)
        g = dy_t if d_prev_y is None else dy_t + d_prev_y
        if m_t is None:
            d_raw_y, d_raw_state, d_carry_y, d_skip = g, d_state, None, None
        else:
            mm = m_t[:, None]
            d_raw_y = jnp.where(mm, g, 0.0)
            d_carry_y = None if zero_output else jnp.where(mm, 0.0, g)
            d_raw_state = _where(m_t, d_state, jax.tree.map(jnp.zeros_like, d_state))
            d_skip = _where(m_t, jax.tree.map(jnp.zeros_like, d_state), d_state)
        if spec.pointwise_vjp is not None:
            d_pieces, d_state_pw = spec.pointwise_vjp(pieces_t, state_prev, d_raw_y, d_raw_state)
            d_hr, d_s = _cat(spec.grad_parts(d_pieces)[1]), None
        elif spec.additive:  # the piece is gx_t + hr_t, and both get its gradient
            _, vjp = jax.vjp(lambda z, st, s: spec.pointwise(z, 0.0, st, s), pieces_t[0], state_prev, s_t)
            d_gx, d_state_pw, d_s = vjp((d_raw_y, d_raw_state))
            d_hr = d_gx
        elif spec.mid_vjps is not None:  # back through s = a @ u2 in between
            gx_t, hr_t = pieces_t
            first, second = spec.mid_vjps
            d_s, partial = first(gx_t, hr_t, state_prev, s_t, d_raw_y, d_raw_state)
            d_a = _project_dx(d_s, u2_t, drop.rec2)
            d_gx, d_hr, d_state_pw = second(gx_t, hr_t, state_prev, d_a, partial)
        else:
            gx_t, hr_t = pieces_t
            _, vjp = jax.vjp(spec.pointwise, gx_t, hr_t, state_prev, s_t)
            d_gx, d_hr, d_state_pw, d_s = vjp((d_raw_y, d_raw_state))
        if spec.mid is not None and spec.mid_vjps is None:  # back through s = a @ u2 and a = mid(gx, hr, state)
            d_a = _project_dx(d_s, u2_t, drop.rec2)
            _, vjp_mid = jax.vjp(spec.mid, gx_t, hr_t, state_prev)
            d_gx_mid, d_hr_mid, d_state_mid = vjp_mid(d_a)
            d_gx, d_hr = d_gx + d_gx_mid, d_hr + d_hr_mid
            d_state_pw = jax.tree.map(jnp.add, d_state_pw, d_state_mid)
        d_h = _project_dx(d_hr, u_t, drop.rec)
        if len(lanes) > 1:
            d_h = _holding(d_h, d_state)
        _, vjp_in = jax.vjp(spec.rec_input, state_prev)
        (d_state_in,) = vjp_in(d_h)
        d_prev = jax.tree.map(jnp.add, d_state_pw, d_state_in)
        if d_skip is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_skip)
        if spec.pointwise_vjp is None:
            d_pieces = (d_gx,) if spec.additive else (d_gx, d_hr)
        bufs = _write_last(bufs, d_pieces, t, jax.tree.leaves(d_prev))
        return (d_prev, d_carry_y, bufs), d_s

    def step(carry, inputs):  # one carry and one set of residuals per lane
        dy_t, lane_inputs, m_t, t = inputs
        results = [
            lane_step(d, c, (_rows(dy_t, lo, hi), state_prev, s_t, _rows(m_t, lo, hi), t))
            for (lo, hi), d, c, (state_prev, s_t) in zip(lanes, lane_drops, carry, lane_inputs, strict=True)
        ]
        return tuple(c for c, _ in results), tuple(d_s for _, d_s in results)

    # A masked step repeats the last output, so its output gradient flows back to the last unmasked
    # step; without a mask (or with zero_output) there is none, and nothing to carry.
    carries_y = mask is not None and not zero_output
    carry0 = []
    for (lo, hi), (pre, *_) in zip(lanes, res, strict=True):
        # The pre-activations' gradients overwrite the saved pre-activations step by step, in place:
        # no (T, B, G*u) buffer of the backward's own to allocate and zero (3-9% of fwd+bwd on CPU).
        bufs = tuple(pre)
        d_y0 = jnp.zeros((hi - lo, dys.shape[-1]), dys.dtype) if carries_y else None
        carry0.append((_rows(dfinal, lo, hi), d_y0, bufs))
    steps = jnp.arange(dys.shape[0], dtype=jnp.int32)
    lane_inputs = tuple((prev_states, s_s) for _, prev_states, _, s_s in res)
    carry, d_s = jax.lax.scan(step, tuple(carry0), (dys, lane_inputs, mask, steps), reverse=not reverse, unroll=_UNROLL)
    grads = []  # each lane's weight gradients (summed) and input gradients (joined)
    for (lo, hi), d, (_, prev_states, a_s, _), (_, _, bufs), d_s_l in zip(
        lanes, lane_drops, res, carry, d_s, strict=True
    ):
        d_gx, d_hr = spec.grad_parts(bufs)
        prev_h = jax.vmap(spec.rec_input)(prev_states)
        grads.append(_weight_grads_f32(wt, _rows(xs, lo, hi, axis=1), d, prev_h, a_s, d_gx, d_hr, d_s_l))
    d_wt = jax.tree.map(lambda *a: reduce(jnp.add, a), *(g for g, _ in grads))
    dxs = _join([dx for _, dx in grads], axis=1)
    return (*_cast_grads(wt, xs, d_wt, dxs), _join([c[0] for c in carry]))


def _holding(d_h, d_state):
    """``d_h``, a lane's recurrent product in the backward, made after reading ``d_state``.

    The step's incoming state gradient is dead once the gate math has read it, and XLA gave its
    buffer (a loop carry) to the other lane's product input, then to this lane's product output:
    the executor orders a write after the reads of the same bytes, so the reset-after GRU's two
    lanes ran their products one after the other (~70 us a step at (32, 128, 128, 256)). Read
    here, the buffer stays this lane's until its product is done: the GRU's fwd+bwd there took
    9-10% less in two A/B runs, the other cells within the noise (bench/results/ab_fused.md).
    """
    return reduce(_after, jax.tree.leaves(d_state), d_h)


def _write_last(bufs, d_pieces, t, waits_for):
    """``bufs`` with step ``t`` overwritten by ``d_pieces``, after ``waits_for`` and in order.

    The gradients overwrite the step's saved pre-activations in place, and XLA may recompute gate
    values from the saved ones inside later fusions: those that make the state's gradient (after
    the products) and those that make a piece's gradient along with its write (the reset-after
    GRU's ``d_r`` reads ``hr``). A write that may run before such a read makes XLA copy the whole
    buffer every step. With ``jax.vjp`` of the gate math the reset-before GRU's fwd+bwd took 2.4x
    (16, 64, 32, 64) to 3.7x (32, 128, 128, 256) as long, the hard_sigmoid LSTM 1.8x to 3.2x
    (bench/results/ab_fused.md); the closed forms with jvp slopes copied too (the relu GRU), those
    with one tanh did not. So every write waits for ``waits_for`` (the state's gradient) and for
    the writes before it: for the tanh/sigmoid LSTM and GRU that moved fwd+bwd by -4% to +2%,
    within the noise.
    """
    written = []
    for buf, d in zip(bufs, d_pieces, strict=True):
        for dep in [*waits_for, *written]:
            d = _after(d, dep)
        written.append(jax.lax.dynamic_update_index_in_dim(buf, d, t, 0))
    return tuple(written)


def _weight_grads(wt, xs, drop, prev_h, a_s, d_gx, d_hr, d_s):
    """The cuDNN split: every weight, bias and input gradient as one large matmul over all steps.

    ``d_gx`` and ``d_hr`` are the gradients of ``x @ w + b_in`` and ``h @ u + b_rec`` at every step,
    each a tuple of column blocks (``Spec.grad_parts``) that are used where they lie; ``prev_h`` the
    matmul's input ``h`` (``(T, B, units)``); ``a_s``/``d_s`` the same for ``a @ u2``.
    Returns ``(d_wt, dxs)`` in the weights' and inputs' dtypes.
    """
    return _cast_grads(wt, xs, *_weight_grads_f32(wt, xs, drop, prev_h, a_s, d_gx, d_hr, d_s))


def _weight_grads_f32(wt, xs, drop, prev_h, a_s, d_gx, d_hr, d_s):
    """``_weight_grads`` in float32, for summing over lanes before the cast."""
    du = _project_dw(prev_h, drop.rec, d_hr)
    du2 = None if wt.u2 is None else _project_dw(a_s, drop.rec2, (d_s,))
    dw = _project_dw(xs, drop.inputs, d_gx)
    dxs = _project_dx_parts(d_gx, _f32(wt.w).T, drop.inputs)
    db_in = None if wt.b_in is None else _cat([jnp.sum(d, axis=(0, 1)) for d in d_gx])
    db_rec = None if wt.b_rec is None else _cat([jnp.sum(d, axis=(0, 1)) for d in d_hr])
    return Weights(dw, du, du2, db_in, db_rec), dxs


def _cast_grads(wt, xs, d_wt, dxs):
    return jax.tree.map(lambda d, w: d.astype(w.dtype), d_wt, wt), dxs.astype(xs.dtype)


def primal_cotangents(state0, mask, drop, d_wt, dxs, d_state0):
    """The cotangents of ``fused``'s differentiable arguments ``(wt, xs, state0, mask, drop)``."""
    d_state0 = jax.tree.map(lambda d, s: d.astype(s.dtype), d_state0, state0)
    d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)  # masks are constants
    return d_wt, dxs, d_state0, d_mask, jax.tree.map(jnp.zeros_like, drop)


def _swap(a, batch_major):  # (B, T, ...) <-> (T, B, ...)
    return jnp.swapaxes(a, 0, 1) if batch_major else a


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _fused(
    spec: Spec, reverse: bool, zero_output: bool, batch_major: bool, wt: Weights, xs, state0, mask, drop: Dropout
):
    """``(ys, final_state)`` of the recurrence, float32 state and outputs.

    ``xs`` and ``ys`` are ``(B, T, ...)`` with ``batch_major``, else ``(T, B, ...)``; ``mask`` is
    ``(T, B)``. Under differentiation the forward and backward loops run time-major.
    """
    ys, final, _ = _forward(spec, reverse, zero_output, wt, xs, state0, mask, drop, save=False, batch_major=batch_major)
    return ys, final


def _fused_fwd(spec, reverse, zero_output, batch_major, wt, xs, state0, mask, drop):
    xs = _swap(xs, batch_major)
    ys, final, res = _forward(spec, reverse, zero_output, wt, xs, state0, mask, drop)
    return (_swap(ys, batch_major), final), (wt, xs, state0, mask, drop, res)


def _fused_bwd(spec, reverse, zero_output, batch_major, saved, cotangents):
    wt, xs, state0, mask, drop, res = saved
    dys, dfinal = cotangents
    dys = _swap(dys, batch_major)
    d_wt, dxs, d_state0 = _backward(spec, reverse, zero_output, wt, xs, mask, drop, res, dys, dfinal)
    return primal_cotangents(state0, mask, drop, d_wt, _swap(dxs, batch_major), d_state0)


_fused.defvjp(_fused_fwd, _fused_bwd)

# The loops' step functions are closures made anew in every call, so without a jit of its own each
# eager call (a notebook cell) traced and compiled the loops again: ~0.5 s a call for a small LSTM
# layer. Jitted, eager calls compile once per static arguments and shapes; in a caller's jit, this
# one is inlined.
fused = jax.jit(_fused, static_argnums=(0, 1, 2, 3))

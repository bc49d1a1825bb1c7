"""The fused recurrence, cuDNN's split of the work, shared by the LSTM and GRU kernels.

Forward: the input projection of every step is one large matmul (``gx``); the loop does only the
recurrent matmul and the gate math. Backward (``custom_vjp``): a reverse-time loop turns output and
state gradients into pre-activation gradients (``dgx``, ``dhr``) with one small matmul per step;
the weight, bias and input gradients are then large matmuls over all steps.

A kernel supplies ``pointwise(gx_t, hr_t, state) -> (y, new_state)``, the gate math after the two
matmuls, and ``rec_input(state) -> h``, the recurrent matmul's input. Gate derivatives come from
``jax.vjp`` of ``pointwise``, so every activation works. Masks follow DESIGN.md (a masked step
carries the state and repeats the last output, or outputs zeros with ``zero_output``).
Everything is time-major inside: ``xs`` is ``(T, B, n_in)``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


# Steps per loop iteration. On XLA:CPU a loop that reads a precomputed projection ran ~30%
# slower at one step per iteration than at four (a probe on the 2-core machine); results are identical.
_UNROLL = 4


class Spec(NamedTuple):
    """The cell-specific part of a fused kernel (hashable: a static argument)."""

    pointwise: Callable  # (gx_t, hr_t, state) -> (y, new_state); float32 in, float32 out
    rec_input: Callable  # state -> (B, units)
    gates: int


def _gate_split(a, gates):  # (..., G*u) -> (..., G, u)
    return a.reshape(*a.shape[:-1], gates, a.shape[-1] // gates)


def _lead(m, x):
    """A ``(B, n)`` mask with unit axes in front so that it multiplies ``x`` (rank promotion off)."""
    return m.reshape((1,) * (x.ndim - m.ndim) + m.shape)


def _project(x, w, masks, gates):
    """``x @ w`` with an optional per-gate dropout mask ``(count, B, n)``: ``(..., B, G*u)``, f32."""
    if masks is None:
        return jnp.matmul(x, w, preferred_element_type=jnp.float32)
    m = masks.astype(x.dtype)
    if m.shape[0] == 1:
        return jnp.matmul(x * _lead(m[0], x), w, preferred_element_type=jnp.float32)
    w_g = _gate_split(w, gates)  # (n, G, u)
    out = jnp.einsum("...bn,gbn,ngu->...bgu", x, m, w_g, preferred_element_type=jnp.float32)
    return out.reshape(*out.shape[:-2], -1)


def _project_grads(x, w, masks, gates, d_out):
    """Gradients of ``_project`` w.r.t. ``x`` and ``w`` for output gradient ``d_out`` (f32)."""
    batch_axes = "tb" if x.ndim == 3 else "b"
    xf, wf = x.astype(jnp.float32), w.astype(jnp.float32)
    if masks is None or masks.shape[0] == 1:
        m0 = None if masks is None else _lead(masks[0].astype(jnp.float32), xf)
        xm = xf if m0 is None else xf * m0
        dw = jnp.einsum(f"{batch_axes}n,{batch_axes}g->ng", xm, d_out)
        dx = d_out @ wf.T
        return (dx if m0 is None else dx * m0), dw
    m = masks.astype(jnp.float32)
    d_g = _gate_split(d_out, gates)  # (..., B, G, u)
    w_g = _gate_split(wf, gates)  # (n, G, u)
    dw = jnp.einsum(f"{batch_axes}n,gbn,{batch_axes}gu->ngu", xf, m, d_g).reshape(wf.shape)
    dx = jnp.einsum(f"{batch_axes}gu,ngu,gbn->{batch_axes}n", d_g, w_g, m)
    return dx, dw


def _add_bias(a, b):
    """``a + b`` with the bias broadcast over the leading axes explicitly (no rank promotion)."""
    return a + b.astype(jnp.float32).reshape((1,) * (a.ndim - 1) + b.shape)


def _where(m, new, old):
    return jax.tree.map(lambda n, o: jnp.where(m.reshape(m.shape + (1,) * (n.ndim - m.ndim)), n, o), new, old)


def _forward(spec, reverse, zero_output, w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks, save=True):
    gx = _project(xs, w, in_masks, spec.gates)
    if b_in is not None:
        gx = _add_bias(gx, b_in)
    u32 = u.astype(jnp.float32)
    state0 = jax.tree.map(lambda a: a.astype(jnp.float32), state0)

    def step(carry, inputs):
        state, prev_y = carry
        gx_t, m_t = inputs
        hr = _project(spec.rec_input(state), u32, rec_masks, spec.gates)
        if b_rec is not None:
            hr = _add_bias(hr, b_rec)
        y, new = spec.pointwise(gx_t, hr, state)
        if m_t is not None:
            new = _where(m_t, new, state)
            y = jnp.where(m_t[:, None], y, jnp.zeros_like(y) if zero_output else prev_y)
        return (new, y), ((y, hr, state) if save else (y, None, None))  # residuals only for backward

    step_spec = jax.ShapeDtypeStruct(gx.shape[1:], jnp.float32)  # gx[0] need not exist (T == 0)
    y0 = jnp.zeros(jax.eval_shape(spec.pointwise, step_spec, step_spec, state0)[0].shape, jnp.float32)
    (final, _), (ys, hrs, prev_states) = jax.lax.scan(step, (state0, y0), (gx, mask), reverse=reverse, unroll=_UNROLL)
    return ys, final, (gx, hrs, prev_states)


def _backward(spec, reverse, zero_output, w, u, b_in, b_rec, xs, mask, in_masks, rec_masks, res, dys, dfinal):
    gx, hrs, prev_states = res
    u32 = u.astype(jnp.float32)

    def step(carry, inputs):
        d_state, d_prev_y = carry
        dy_t, gx_t, hr_t, state_prev, m_t = inputs
        g = dy_t + d_prev_y
        if m_t is None:
            d_raw_y, d_raw_state, d_carry_y, d_skip = g, d_state, jnp.zeros_like(g), None
        else:
            mm = m_t[:, None]
            d_raw_y = jnp.where(mm, g, 0.0)
            d_carry_y = jnp.zeros_like(g) if zero_output else jnp.where(mm, 0.0, g)
            d_raw_state = _where(m_t, d_state, jax.tree.map(jnp.zeros_like, d_state))
            d_skip = _where(m_t, jax.tree.map(jnp.zeros_like, d_state), d_state)
        _, vjp = jax.vjp(spec.pointwise, gx_t, hr_t, state_prev)
        d_gx, d_hr, d_state_pw = vjp((d_raw_y, d_raw_state))
        h_prev = spec.rec_input(state_prev)
        d_h, _ = _project_grads(h_prev, u32, rec_masks, spec.gates, d_hr)
        _, vjp_in = jax.vjp(spec.rec_input, state_prev)
        (d_state_in,) = vjp_in(d_h)
        d_prev = jax.tree.map(jnp.add, d_state_pw, d_state_in)
        if d_skip is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_skip)
        return (d_prev, d_carry_y), (d_gx, d_hr)

    carry0 = (dfinal, jnp.zeros_like(dys[0]))
    (d_state0, _), (d_gx, d_hr) = jax.lax.scan(
        step, carry0, (dys, gx, hrs, prev_states, mask), reverse=not reverse, unroll=_UNROLL
    )
    # The cuDNN split: every weight, bias and input gradient as one large matmul over all steps.
    h_prevs = jax.vmap(spec.rec_input)(prev_states)
    _, du = _project_grads(h_prevs, u32, rec_masks, spec.gates, d_hr)
    dxs, dw = _project_grads(xs, w, in_masks, spec.gates, d_gx)
    db_in = None if b_in is None else jnp.sum(d_gx, axis=(0, 1)).astype(b_in.dtype)
    db_rec = None if b_rec is None else jnp.sum(d_hr, axis=(0, 1)).astype(b_rec.dtype)
    return dw.astype(w.dtype), du.astype(u.dtype), db_in, db_rec, dxs.astype(xs.dtype), d_state0


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def fused(spec, reverse, zero_output, w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks):
    """``(ys, final_state)`` of the recurrence, time-major, float32 state and outputs."""
    ys, final, _ = _forward(
        spec, reverse, zero_output, w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks, save=False
    )
    return ys, final


def _fused_fwd(spec, reverse, zero_output, w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks):
    ys, final, res = _forward(spec, reverse, zero_output, w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks)
    return (ys, final), (w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks, res)


def _fused_bwd(spec, reverse, zero_output, saved, cotangents):
    w, u, b_in, b_rec, xs, state0, mask, in_masks, rec_masks, res = saved
    dys, dfinal = cotangents
    dw, du, db_in, db_rec, dxs, d_state0 = _backward(
        spec, reverse, zero_output, w, u, b_in, b_rec, xs, mask, in_masks, rec_masks, res, dys, dfinal
    )
    d_state0 = jax.tree.map(lambda d, s: d.astype(s.dtype), d_state0, state0)
    d_mask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)  # masks are constants
    no_grad = lambda a: None if a is None else jnp.zeros_like(a)  # noqa: E731
    return dw, du, db_in, db_rec, dxs, d_state0, d_mask, no_grad(in_masks), no_grad(rec_masks)


fused.defvjp(_fused_fwd, _fused_bwd)

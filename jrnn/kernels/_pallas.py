"""A persistent LSTM / reset-after GRU forward kernel for NVIDIA Hopper GPUs (Pallas, Mosaic GPU).

One CTA owns ``_BT`` batch columns for all timesteps. The recurrent weight ``U`` is copied into
shared memory once; each step is, per block of 64 units, one tensor-core product per gate
(``U^T[gate, units] @ h^T``, bf16 operands, float32 accumulation) plus the gate math in float32,
with ``c`` and ``h`` carried in registers. The problem is transposed (units are the rows, batch the
columns) so that the batch tile can be 16 wide: the tensor core's M is 64, N can be 8..256.

Roughly this, per CTA::

    U_smem = U^T                                  # (G*Hp, Hp) bf16, once
    for t in range(T):                            # reversed with go_backwards
        gx = gx_ring[t % S]                       # (G*Hp, BT) f32, prefetched S steps ahead (TMA)
        for k in range(Hp // 64):
            z_g = U_smem[g*Hp + 64k : +64] @ h_smem + gx[g*Hp + 64k : +64]   # each gate g
            h[k], c[k] = gate math, masked steps keep the state
        h_smem = bf16(h); hs[t], cs[t] = h, c       # TMA store

The input projection ``gx`` is XLA's (one large matmul, cuDNN's split). The backward is the XLA
fused engine's (``_engine._backward``): this module recomputes its residuals from the saved
states with one large matmul, so the forward keeps no per-gate activations. A backward kernel
is future work.

Precision: ``h @ U`` uses bf16 operands with float32 accumulation, also for float32 inputs, so
results differ from the float32 scan by bf16 rounding (relative ~1e-3 per step). Everything else
(input projection, gate math, states) is float32.

Tests run the kernel in the Mosaic GPU interpreter on the CPU (``interpret=True``), with race
detection, and lower it for CUDA; no GPU measurement exists yet (``bench/gpu.py``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import activations
from jrnn.cells import GRUState, LSTMState
from jrnn.kernels import _engine
from jrnn.kernels._engine import Dropout, Spec, Weights

_BT = 16  # batch columns per CTA: the tensor core's N
_ROWS = 64  # units per block: the tensor core's M for one warpgroup
_MAX_UNITS = 128  # Tier A: U^T of an LSTM with 128 units is 128 KiB of bf16 in shared memory
_SMEM_BYTES = 227 * 1024  # Hopper's shared memory per CTA
_MAX_STAGES = 4  # prefetch depth of the gx ring
# Activations the Mosaic GPU lowering handles (no expm1 or log1p there: elu, selu and softplus are not).
_LOWERABLE = frozenset(
    getattr(activations, name)
    for name in ("tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras3", "relu", "linear", "softsign", "exponential")
)


# The same functions without custom_jvp wrappers, which the kernel's resource estimate rejects; the
# kernel needs values only (its backward is XLA's).
_KERNEL_FORMS = {activations.relu: lambda x: jnp.maximum(x, 0.0)}


class _Plan(NamedTuple):
    """Everything static about one kernel launch (hashable)."""

    kind: str  # 'lstm' or 'gru' (reset_after)
    activation: Any
    recurrent_activation: Any
    steps: int
    units: int  # padded to a multiple of _ROWS
    batch: int  # padded to a multiple of _BT
    masked: bool
    reverse: bool
    interpret: bool

    @property
    def gates(self):
        return 4 if self.kind == "lstm" else 3

    @property
    def state_count(self):
        return 2 if self.kind == "lstm" else 1


def _round_up(n, m):
    return -(-n // m) * m


def _smem_bytes(kind, units, masked, stages):
    gates, states = (4, 2) if kind == "lstm" else (3, 1)
    u = _round_up(units, _ROWS)
    fixed = gates * u * u * 2 + u * _BT * 2 + states * u * _BT * 4  # U^T, h (bf16), state staging
    if kind == "gru":
        fixed += gates * u * _BT * 4  # the recurrent bias, broadcast over the tile
    per_stage = gates * u * _BT * 4 + (_ROWS * _BT * 4 if masked else 0)
    return fixed + stages * per_stage


def _stages(kind, units, masked):
    fits = [s for s in range(2, _MAX_STAGES + 1) if _smem_bytes(kind, units, masked, s) <= _SMEM_BYTES]
    return max(fits) if fits else 0


def pallas_eligible(config, units: int, *, recurrent_dropout: bool = False) -> tuple[bool, str]:
    """Whether the Pallas kernel can run a cell with this ``config``, and if not, why not."""
    if config is None or config.get("kind") not in ("lstm", "gru"):
        return False, "the Pallas kernel runs LSTM and GRU cells only"
    if config["kind"] == "gru" and not config["reset_after"]:
        return False, "the Pallas kernel runs the reset_after=True GRU; reset_after=False runs on the XLA fused path"
    for name in ("activation", "recurrent_activation"):
        if config[name] not in _LOWERABLE:
            return False, f"{name}={getattr(config[name], '__name__', config[name])!r} has no Mosaic GPU lowering"
    if units > _MAX_UNITS:
        return False, f"hidden size {units} exceeds the on-chip limit of {_MAX_UNITS} units per CTA"
    if recurrent_dropout:
        return False, "recurrent dropout is not in the Pallas kernel; it runs on the XLA fused path"
    if not _stages(config["kind"], units, masked=True):  # pragma: no cover - every size up to _MAX_UNITS fits
        return False, f"hidden size {units} does not fit in shared memory"
    return True, "eligible"


def _kernel_body(plan: _Plan, stages: int, *refs):
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    lstm, gates, u, steps = plan.kind == "lstm", plan.gates, plan.units, plan.steps
    refs = list(refs)
    gx_ref, ut_ref, h0_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    c0_ref = refs.pop(0) if lstm else None
    b_ref = refs.pop(0) if not lstm else None
    m_ref = refs.pop(0) if plan.masked else None
    hs_ref = refs.pop(0)
    cs_ref = refs.pop(0) if lstm else None
    ut_smem, h_smem, st_smem, gx_smem = refs[:4]
    m_smem = refs.pop(4) if plan.masked else None
    b_smem = refs.pop(4) if not lstm else None
    ring_bars, once_bar = refs[4:]

    def wg(v):  # registers in the tensor core's accumulator layout (the interpreter has no layouts)
        return v if plan.interpret else plgpu.layout_cast(v, plgpu.Layout.WGMMA)

    act = _KERNEL_FORMS.get(plan.activation, plan.activation)
    ract = _KERNEL_FORMS.get(plan.recurrent_activation, plan.recurrent_activation)
    blocks = [pl.ds(k * _ROWS, _ROWS) for k in range(u // _ROWS)]
    cols = pl.ds(jax.lax.axis_index("b") * _BT, _BT)

    def time_index(t):
        return steps - 1 - t if plan.reverse else t

    def per_gate(src, dst, barrier):  # one copy per gate block: a TMA box is at most 256 rows
        for g in range(gates):
            block = pl.ds(g * u, u)
            plgpu.copy_gmem_to_smem(src.at[block], dst.at[block], barrier)

    def fetch(t, slot):
        ti = time_index(t)
        per_gate(gx_ref.at[ti, :, cols], gx_smem.at[slot], ring_bars.at[slot])
        if plan.masked:
            plgpu.copy_gmem_to_smem(m_ref.at[ti, :, cols], m_smem.at[slot], ring_bars.at[slot])

    per_gate(ut_ref, ut_smem, once_bar)
    plgpu.copy_gmem_to_smem(h0_ref.at[:, cols], st_smem.at[0], once_bar)
    if lstm:
        plgpu.copy_gmem_to_smem(c0_ref.at[:, cols], st_smem.at[1], once_bar)
    else:
        per_gate(b_ref, b_smem, once_bar)
    for s in range(min(stages, steps)):
        fetch(s, s)
    plgpu.barrier_wait(once_bar)
    h = tuple(wg(st_smem[0, rows]) for rows in blocks)
    c = tuple(wg(st_smem[1, rows]) for rows in blocks) if lstm else ()
    for rows, h_k in zip(blocks, h, strict=True):
        h_smem[rows] = h_k.astype(jnp.bfloat16)
    plgpu.commit_smem()

    def rec_product(gate, rows):  # (64, BT) = U^T[gate block, these units] @ h^T, f32
        def body(acc_ref):
            plgpu.wgmma(acc_ref, ut_smem.at[pl.ds(gate * u + rows.start, _ROWS)], h_smem)
            plgpu.wgmma_wait(0)
            return acc_ref[...]

        return pl.run_scoped(body, plgpu.ACC((_ROWS, _BT), jnp.float32))

    def step(t, carry):
        h, c = carry
        slot = jax.lax.rem(t, stages)
        plgpu.barrier_wait(ring_bars.at[slot])
        keep = wg(m_smem[slot]) > 0 if plan.masked else None
        new_h, new_c = [], []
        for k, rows in enumerate(blocks):
            hr = [rec_product(g, rows) for g in range(gates)]
            gx = [wg(gx_smem[slot, pl.ds(g * u + rows.start, _ROWS)]) for g in range(gates)]
            if lstm:
                i, f, c_hat, o = (a + b for a, b in zip(gx, hr, strict=True))
                c_k = ract(f) * c[k] + ract(i) * act(c_hat)
                h_k = ract(o) * act(c_k)
                if keep is not None:
                    c_k = jnp.where(keep, c_k, c[k])
                new_c.append(c_k)
            else:
                hr = [a + wg(b_smem[pl.ds(g * u + rows.start, _ROWS)]) for g, a in enumerate(hr)]
                z = ract(gx[0] + hr[0])
                r = ract(gx[1] + hr[1])
                h_k = z * h[k] + (1.0 - z) * act(gx[2] + r * hr[2])
            if keep is not None:
                h_k = jnp.where(keep, h_k, h[k])
            new_h.append(h_k)
        ti = time_index(t)
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last step's stores have read the staging
        for rows, h_k in zip(blocks, new_h, strict=True):
            st_smem[0, rows] = h_k
            h_smem[rows] = h_k.astype(jnp.bfloat16)
        for rows, c_k in zip(blocks, new_c, strict=lstm):
            st_smem[1, rows] = c_k
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(st_smem.at[0], hs_ref.at[ti, :, cols])
        if lstm:
            plgpu.copy_smem_to_gmem(st_smem.at[1], cs_ref.at[ti, :, cols])
        plgpu.commit_smem_to_gmem_group()

        @pl.when(t + stages < steps)
        def _():
            fetch(t + stages, slot)

        return tuple(new_h), tuple(new_c)

    jax.lax.fori_loop(0, steps, step, (h, c))
    plgpu.wait_smem_to_gmem(0)


def _launch(plan: _Plan, gx_t, ut, h0_t, c0_t, b_t, m_t):
    """The kernel on transposed, padded operands: ``(hs, cs)``, each ``(T, units, batch)`` f32."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    stages = _stages(plan.kind, plan.units, plan.masked)
    u, gates = plan.units, plan.gates
    swizzle = (plgpu.TilingTransform((8, _BT)), plgpu.SwizzleTransform(_BT * 2))  # A's and B's must match
    scratch = [
        plgpu.SMEM((gates * u, u), jnp.bfloat16, transforms=swizzle),  # U^T
        plgpu.SMEM((u, _BT), jnp.bfloat16, transforms=swizzle),  # h^T, the product's B operand
        plgpu.SMEM((plan.state_count, u, _BT), jnp.float32),  # state staging for the TMA stores
        plgpu.SMEM((stages, gates * u, _BT), jnp.float32),  # the gx ring
    ]
    if plan.masked:
        scratch.append(plgpu.SMEM((stages, _ROWS, _BT), jnp.float32))  # the mask ring, one tile per step
    if plan.kind == "gru":
        scratch.append(plgpu.SMEM((gates * u, _BT), jnp.float32))  # the recurrent bias
    once = 2 * gates + 1 if plan.kind == "gru" else gates + 2  # U^T, h0, and c0 or the bias
    scratch += [plgpu.Barrier(num_arrivals=gates + plan.masked, num_barriers=stages), plgpu.Barrier(num_arrivals=once)]
    out = jax.ShapeDtypeStruct((plan.steps, u, plan.batch), jnp.float32)
    inputs = [gx_t, ut, h0_t] + ([c0_t] if plan.kind == "lstm" else [b_t]) + ([m_t] if plan.masked else [])
    interpret = None
    if plan.interpret:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

        interpret = InterpretGPUParams(detect_races=True)
    kernel = plgpu.kernel(
        partial(_kernel_body, plan, stages),
        out_type=(out,) * plan.state_count,
        scratch_types=scratch,
        grid=(plan.batch // _BT,),
        grid_names=("b",),
        interpret=interpret,
    )
    outs = kernel(*inputs)
    return outs[0], (outs[1] if plan.kind == "lstm" else None)


def _pad_gates(a, gates, units, padded):
    """``(..., G*units) -> (..., G, padded)`` with zeros: padded units never reach real ones."""
    a = a.reshape(*a.shape[:-1], gates, units)
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, padded - units)])


class _Static(NamedTuple):
    spec: Spec
    kind: str
    activation: Any
    recurrent_activation: Any
    reverse: bool
    zero_output: bool
    interpret: bool


def _states(st: _Static, wt: Weights, gx, state0, mask):
    """Per-step states, time-major ``(T, B, units)`` f32: ``(hs, cs)`` (``cs`` is None for the GRU)."""
    steps, batch, units = gx.shape[0], gx.shape[1], wt.u.shape[0]
    gates = 4 if st.kind == "lstm" else 3
    u, b = _round_up(units, _ROWS), _round_up(batch, _BT)
    plan = _Plan(
        st.kind, st.activation, st.recurrent_activation, steps, u, b, mask is not None, st.reverse, st.interpret
    )

    def cols(a):  # (B, n) -> (n, Bp), batch padded with zeros
        return jnp.pad(a.astype(jnp.float32), [(0, b - batch), (0, u - units)]).T

    gx_t = jnp.pad(_pad_gates(gx, gates, units, u), [(0, 0), (0, b - batch), (0, 0), (0, 0)])
    gx_t = gx_t.reshape(steps, b, gates * u).transpose(0, 2, 1)
    ut = _pad_gates(wt.u.astype(jnp.float32), gates, units, u)  # (units, G, u)
    ut = jnp.pad(ut, [(0, u - units), (0, 0), (0, 0)]).transpose(1, 2, 0).reshape(gates * u, u)
    b_t = m_t = c0_t = None
    if st.kind == "lstm":
        c0_t = cols(state0.c)
    else:
        b_rec = jnp.zeros((gates * units,), jnp.float32) if wt.b_rec is None else wt.b_rec.astype(jnp.float32)
        b_t = jnp.broadcast_to(_pad_gates(b_rec, gates, units, u).reshape(-1, 1), (gates * u, _BT))
    if mask is not None:
        m = jnp.pad(mask.astype(jnp.float32), [(0, 0), (0, b - batch)])
        m_t = jnp.broadcast_to(m[:, None, :], (steps, _ROWS, b))
    hs_t, cs_t = _launch(plan, gx_t, ut.astype(jnp.bfloat16), cols(state0.h), c0_t, b_t, m_t)

    def back(a):  # (T, u, Bp) -> (T, B, units)
        return None if a is None else a.transpose(0, 2, 1)[:, :batch, :units]

    return back(hs_t), back(cs_t)


def _outputs(hs, mask, reverse, zero_output):
    """The layer outputs from the per-step states: a masked step repeats the last output (or is 0)."""
    if mask is None:
        return hs
    if zero_output:
        return jnp.where(mask[..., None], hs, 0.0)
    steps = hs.shape[0]
    t = jnp.arange(steps, dtype=jnp.int32)[:, None]
    if reverse:  # the last output before step t in processing order is the nearest valid step after it
        last = jax.lax.cummin(jnp.where(mask, t, steps), axis=0, reverse=True)
        valid = last < steps
    else:
        last = jax.lax.cummax(jnp.where(mask, t, -1), axis=0)
        valid = last >= 0
    picked = jnp.take_along_axis(hs, jnp.clip(last, 0, steps - 1)[..., None], axis=0)
    return jnp.where(valid[..., None], picked, 0.0)


def _run(st: _Static, wt: Weights, xs, state0, mask, drop: Dropout):
    gx = _engine._project(xs, wt.w, drop.inputs)
    if wt.b_in is not None:
        gx = _engine._add_bias(gx, wt.b_in)
    hs, cs = _states(st, wt, gx, state0, mask)
    last = 0 if st.reverse else -1
    final = LSTMState(hs[last], cs[last]) if st.kind == "lstm" else GRUState(hs[last])
    return _outputs(hs, mask, st.reverse, st.zero_output), final, (gx, hs, cs)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def pallas_fused(st: _Static, wt: Weights, xs, state0, mask, drop: Dropout):
    """``(ys, final_state)`` of the recurrence, time-major, float32: ``_engine.fused``'s contract."""
    ys, final, _ = _run(st, wt, xs, state0, mask, drop)
    return ys, final


def _pallas_fwd(st, wt, xs, state0, mask, drop):
    ys, final, (gx, hs, cs) = _run(st, wt, xs, state0, mask, drop)
    return (ys, final), (wt, xs, state0, mask, drop, gx, hs, cs)


def _pallas_bwd(st, saved, cotangents):
    wt, xs, state0, mask, drop, gx, hs, cs = saved

    def previous(per_step, first):  # the state each step started from, in time order
        first = first[None].astype(jnp.float32)
        if st.reverse:
            return jnp.concatenate([per_step[1:], first])
        return jnp.concatenate([first, per_step[:-1]])

    if st.kind == "lstm":
        prev = LSTMState(previous(hs, state0.h), previous(cs, state0.c))
    else:
        prev = GRUState(previous(hs, state0.h))
    # The engine's residuals, recomputed with one large matmul, rounded as the kernel rounds.
    hr = jnp.matmul(prev.h.astype(jnp.bfloat16), wt.u.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    if wt.b_rec is not None:
        hr = _engine._add_bias(hr, wt.b_rec)
    pre = gx + hr if st.spec.additive else (gx, hr)
    engine_saved = (wt, xs, state0, mask, drop, (pre, prev, None, None))
    return _engine._fused_bwd(st.spec, st.reverse, st.zero_output, engine_saved, cotangents)


pallas_fused.defvjp(_pallas_fwd, _pallas_bwd)

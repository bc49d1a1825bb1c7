"""Persistent LSTM / reset-after GRU kernels for NVIDIA Hopper GPUs (Pallas, Mosaic GPU).

Forward (Tier A, up to 128 units): one CTA owns ``_BT`` batch columns for all timesteps. The recurrent weight ``U`` is
copied into shared memory once; each step is, per block of 64 units, one tensor-core product per
gate (``U^T[gate, units] @ h^T``, bf16 operands, float32 accumulation) plus the gate math in
float32, with ``c`` and ``h`` carried in registers. The problem is transposed (units are the rows,
batch the columns) so that the batch tile can be 16 wide: the tensor core's M is 64, N can be 8..256.

Roughly this, per CTA::

    U_smem = U^T                                  # (G*Hp, Hp) bf16, once
    for t in range(T):                            # reversed with go_backwards
        gx = gx_ring[t % S]                       # (G*Hp, BT) f32, prefetched S steps ahead (TMA)
        for k in range(Hp // 64):
            z_g = U_smem[g*Hp + 64k : +64] @ h_smem + gx[g*Hp + 64k : +64]   # each gate g
            h[k], c[k] = gate math, masked steps keep the state
        h_smem = bf16(h); hs[t], cs[t] = h, c       # TMA store

Tier B, 129 to 256 units: one thread-block cluster per batch tile, one CTA per 64 units. Each CTA
owns its 64 units of every gate, keeps only those rows of ``U^T`` in shared memory (128 KiB for an
LSTM at 256 units) and runs the step above for them; the next product needs every unit's h, so
each step every CTA stores its part of bf16 ``h`` to a two-slot GMEM buffer, the cluster meets at a
cluster barrier, and every CTA loads the whole of it back (TMA both ways). The backward exchanges
its ``d_rec`` the same way. DSMEM stores or TMA multicast would skip the GMEM round trip, but the
interpreter (JAX 0.11) runs neither, so they could not be tested on the CPU; JAX 0.10's interpreter
runs no clusters at all, so Tier B is tested under ``make test-next`` and lowered for CUDA in CI.
Up to 128 units Tier A stays: the exchange costs a GMEM round trip and a barrier per step.

Backward (cuDNN's split, under the kernel's ``custom_vjp``): XLA recomputes the pre-activations
from the saved states with one large matmul (``gx + h_prev @ U``, rounded as the forward rounds),
so the forward keeps no per-gate activations. The backward kernel walks time in reverse with ``U``
in shared memory: per step the gate math's vjp in float32 gives the pre-activation gradients, and
``dh_prev = U @ d_rec^T`` is one tensor-core product per gate and 64-unit block; masked steps pass
the state's gradients through. The weight, bias and input gradients are then large XLA matmuls
(``_engine._weight_grads``), as in the XLA fused path.

Recurrent dropout (one mask for all gates, ``implementation=2``): the kernels load the
``(units, batch tile)`` mask once into registers, staged through shared memory they already have,
and feed ``h * mask`` to every product; the backward masks ``U @ d_rec`` the same way. Per-gate
masks (``implementation=1``) would need a product input per gate in shared memory, which does not
fit at 128 units; they run on the XLA fused path.

The input projection ``gx`` is XLA's (one large matmul). Precision: ``h @ U`` and ``U @ d`` use
bf16 operands with float32 accumulation, also for float32 inputs, so results differ from the
float32 scan by bf16 rounding (relative ~1e-3 per step). Everything else (input projection, gate
math, states, weight gradients) is float32.

Directions and other independent recurrences: under ``jax.vmap`` each kernel launch gains a
leading grid axis (Pallas' batching rule), so a Bidirectional's two directions, stacked with the
backward one's inputs and mask flipped in time, run in one forward and one backward launch.

Tests run both kernels in the Mosaic GPU interpreter on the CPU (``interpret=True``), with race
detection, and lower them for CUDA; no GPU measurement exists yet (``bench/gpu.py``). Beyond 256
units the XLA fused path runs: a gate's block of the exchange would pass a TMA box's 256 rows, and
an LSTM at 320 units no longer fits the backward's shared memory (160 KiB of ``U`` rows, the whole
bf16 ``d_rec`` and one ring slot).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn import activations
from jrnn._errors import message
from jrnn.cells import GRUState, LSTMState
from jrnn.kernels import _engine
from jrnn.kernels._engine import Dropout, Weights

_BT = 16  # batch columns per CTA: the tensor core's N
_ROWS = 64  # units per block: the tensor core's M for one warpgroup
_MAX_UNITS = 128  # Tier A, one CTA: U^T of an LSTM with 128 units is 128 KiB of bf16 in shared memory
_MAX_CLUSTER_UNITS = 256  # Tier B, a cluster of one CTA per 64 units; a TMA box is at most 256 rows
_SMEM_BYTES = 227 * 1024  # Hopper's shared memory per CTA
_MAX_STAGES = 4  # prefetch depth of the gx ring
# Activations the Mosaic GPU lowering handles (no expm1 or log1p there: elu, selu and softplus are not).
_LOWERABLE = frozenset(
    getattr(activations, name)
    for name in ("tanh", "sigmoid", "hard_sigmoid", "hard_sigmoid_keras3", "relu", "linear", "softsign", "exponential")
)


# The same functions without custom_jvp wrappers, which the kernel's resource estimate rejects.
# relu is a select, so that the backward kernel's derivative at 0 is relu's (0), not max's (0.5).
_KERNEL_FORMS = {activations.relu: lambda x: jnp.where(x > 0.0, x, 0.0)}


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
    dropped: bool  # recurrent dropout: one (units, batch) mask on h before every product

    @property
    def gates(self):
        return 4 if self.kind == "lstm" else 3

    @property
    def state_count(self):
        return 2 if self.kind == "lstm" else 1

    @property
    def cluster(self):
        return _cluster_size(self.units)

    @property
    def rows(self):  # the units each CTA owns, of every gate
        return self.units // self.cluster


def _round_up(n, m):
    return -(-n // m) * m


def _cluster_size(units):
    """CTAs per batch tile for ``units`` (padded): one up to ``_MAX_UNITS``, else one per 64 units."""
    return 1 if units <= _MAX_UNITS else units // _ROWS


def _ring_depth(fixed, per_stage, least):
    """The deepest prefetch ring, ``least``..``_MAX_STAGES`` slots, that fits in shared memory; 0 if none."""
    fits = [s for s in range(least, _MAX_STAGES + 1) if fixed + s * per_stage <= _SMEM_BYTES]
    return max(fits) if fits else 0


def _sizes(kind, units):
    """``(gates, states, u, r)``: the padded units ``u`` and each CTA's share ``r`` of them."""
    gates, states = (4, 2) if kind == "lstm" else (3, 1)
    u = _round_up(units, _ROWS)
    return gates, states, u, u // _cluster_size(u)


def _stages(kind, units, masked):
    """The forward's ring depth (at least 2: one slot in use while the next step's loads land)."""
    gates, states, u, r = _sizes(kind, units)
    fixed = gates * r * u * 2 + u * _BT * 2 + states * r * _BT * 4  # U^T's rows, h (bf16), state staging
    if kind == "gru":
        fixed += gates * r * _BT * 4  # the recurrent bias, broadcast over the tile
    per_stage = gates * r * _BT * 4 + (_ROWS * _BT * 4 if masked else 0)
    return _ring_depth(fixed, per_stage, least=2)


def _bwd_stages(kind, units, masked):
    """The backward's ring depth; 1 (no prefetch past the next step) where only one step fits."""
    gates, states, u, r = _sizes(kind, units)
    fixed = gates * r * u * 2 + gates * u * _BT * 2 + states * r * _BT * 4  # U's rows, d_pre (bf16), final staging
    # Per step: the pre-activations (both halves for the GRU), the previous state, dh, the mask.
    pre_halves = 1 if kind == "lstm" else 2
    per_stage = pre_halves * gates * r * _BT * 4 + 2 * r * _BT * 4 + (_ROWS * _BT * 4 if masked else 0)
    return _ring_depth(fixed, per_stage, least=1)


def pallas_eligible(config, units: int, *, recurrent_dropout: int = 0) -> tuple[bool, str]:
    """Whether the Pallas kernel can run a cell with this ``config``, and if not, why not.

    ``recurrent_dropout`` is the number of recurrent dropout masks: 0 (none), 1 (one for all
    gates: ``implementation=2``, Keras 3's only form) or one per gate (``implementation=1``, the
    Keras 2 default that jrnn keeps).
    """
    if isinstance(recurrent_dropout, bool) or not isinstance(recurrent_dropout, int) or recurrent_dropout < 0:
        expected = "the number of recurrent dropout masks (0, 1, or one per gate)"
        raise TypeError(message("recurrent_dropout", expected, repr(recurrent_dropout)))
    if config is None or config.get("kind") not in ("lstm", "gru"):
        return False, "the Pallas kernel runs LSTM and GRU cells only"
    if config["kind"] == "gru" and not config["reset_after"]:
        return False, "the Pallas kernel runs the reset_after=True GRU; reset_after=False runs on the XLA fused path"
    for name in ("activation", "recurrent_activation"):
        if config[name] not in _LOWERABLE:
            return False, f"{name}={getattr(config[name], '__name__', config[name])!r} has no Mosaic GPU lowering"
    if units > _MAX_CLUSTER_UNITS:
        return False, (
            f"hidden size {units} exceeds the on-chip limit of {_MAX_CLUSTER_UNITS} units "
            f"(a cluster of {_MAX_CLUSTER_UNITS // _ROWS} CTAs with {_ROWS} units each)"
        )
    if recurrent_dropout > 1:
        return False, (
            "per-gate recurrent dropout masks (implementation=1) are not in the Pallas kernel; "
            "they run on the XLA fused path"
        )
    fits = _stages(config["kind"], units, masked=True) and _bwd_stages(config["kind"], units, masked=True)
    if not fits:  # pragma: no cover - every size up to _MAX_CLUSTER_UNITS fits
        return False, f"hidden size {units} does not fit in shared memory"
    return True, "eligible"


def uses_cluster(units: int) -> bool:
    """Whether the kernels split ``units`` across a thread-block cluster (Tier B)."""
    return _cluster_size(_round_up(units, _ROWS)) > 1


def interpreter_runs_clusters() -> bool:
    """Whether this JAX's Mosaic GPU interpreter runs thread-block clusters, which Tier B needs (JAX 0.11+)."""
    try:
        from jax._src.pallas.mosaic_gpu.interpret import shared_memory
    except ImportError:  # pragma: no cover - every supported JAX has the interpreter
        return False
    return hasattr(shared_memory, "ClusterBarrier")


def _copy_gates(gates, src, dst, src_rows, dst_rows, barrier=None):
    """GMEM -> SMEM (with ``barrier``) or SMEM -> GMEM, one TMA copy per gate: rows ``src_rows(g)`` to ``dst_rows(g)``.

    One copy per gate keeps each box within TMA's 256 rows and a CTA's share of each gate together.
    """
    import jax.experimental.pallas.mosaic_gpu as plgpu

    for g in range(gates):
        a, b = src.at[src_rows(g)], dst.at[dst_rows(g)]
        if barrier is None:
            plgpu.copy_smem_to_gmem(a, b)
        else:
            plgpu.copy_gmem_to_smem(a, b, barrier)


def _wg(plan, v):
    """Registers in the tensor core's accumulator layout (the interpreter has no layouts)."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    return v if plan.interpret else plgpu.layout_cast(v, plgpu.Layout.WGMMA)


def _integer_pow(x, *, y):  # Mosaic GPU lowers x ** y for y >= 2 and y == -1
    if y < 0:
        return 1.0 / _integer_pow(x, y=-y)
    return jax.lax.integer_pow(x, y) if y > 1 else x if y == 1 else jnp.ones_like(x)


# Primitives that derivatives produce and Mosaic GPU does not lower, as ones it does: the transpose
# accumulates cotangents with add_any; a quotient's derivative has x ** -2 (softsign).
_REWRITES = {"add_any": lambda a, b: jax.lax.add(a, b), "integer_pow": _integer_pow}


def _tensor_core_sum(products):
    """``sum(a @ b)`` over ``(a, b)`` shared-memory refs, accumulated in float32 by ``wgmma``: (64, BT)."""
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    def body(acc_ref):
        for a, b in products:
            plgpu.wgmma(acc_ref, a, b)
        plgpu.wgmma_wait(0)
        return acc_ref[...]

    return pl.run_scoped(body, plgpu.ACC((_ROWS, _BT), jnp.float32))


def _kernel_vjp(fun, primals, cotangent):
    """``jax.vjp(fun, *primals)[1](cotangent)`` with the primitives in ``_REWRITES`` replaced."""
    closed = jax.make_jaxpr(lambda p, c: jax.vjp(fun, *p)[1](c))(primals, cotangent)
    return tuple(_replay(closed.jaxpr, closed.consts, jax.tree.leaves((primals, cotangent))))


def _replay(jaxpr, consts, args):
    from jax.extend.core import Literal

    env = dict(zip(jaxpr.constvars, consts, strict=True)) | dict(zip(jaxpr.invars, args, strict=True))

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive.name in _REWRITES:
            outs = [_REWRITES[eqn.primitive.name](*ins, **eqn.params)]
        elif eqn.primitive.name in ("jit", "pjit", "closed_call"):  # e.g. jnp.clip's transpose
            inner = eqn.params.get("jaxpr") or eqn.params["call_jaxpr"]
            outs = _replay(inner.jaxpr, inner.consts, ins)
        else:
            outs = eqn.primitive.bind(*ins, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _own_rows(plan: _Plan):
    """This CTA's units of every gate: ``(own, full, packed)``.

    ``own`` is the first of them (0 in Tier A, the cluster rank x 64 in Tier B); ``full(g)`` and
    ``packed(g)`` are gate g's rows of them in a full ``(G*u)``-row operand and in a packed
    ``(G*r)``-row buffer of this CTA's.
    """
    import jax.experimental.pallas as pl

    r = plan.rows
    own = 0 if plan.cluster == 1 else pl.multiple_of(jax.lax.axis_index("c") * r, _ROWS)
    return own, (lambda g: pl.ds(g * plan.units + own, r)), (lambda g: pl.ds(g * r, r))


def _kernel_body(plan: _Plan, stages: int, *refs, **scratch):
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    lstm, gates, r, steps = plan.kind == "lstm", plan.gates, plan.rows, plan.steps
    refs = list(refs)
    gx_ref, ut_ref, hin_ref, h0_ref = refs.pop(0), refs.pop(0), refs.pop(0), refs.pop(0)
    c0_ref = refs.pop(0) if lstm else None
    b_ref = refs.pop(0) if not lstm else None
    m_ref = refs.pop(0) if plan.masked else None
    dm_ref = refs.pop(0) if plan.dropped else None
    hs_ref = refs.pop(0)
    cs_ref = refs.pop(0) if lstm else None
    xh_ref = refs.pop(0) if plan.cluster > 1 else None
    ut_smem, h_smem, st_smem, gx_smem = (scratch[k] for k in ("ut", "h", "state", "gx"))
    ring_bars, once_bar = scratch["ring_bars"], scratch["once_bar"]

    wg = partial(_wg, plan)
    act = _KERNEL_FORMS.get(plan.activation, plan.activation)
    ract = _KERNEL_FORMS.get(plan.recurrent_activation, plan.recurrent_activation)
    blocks = [pl.ds(k * _ROWS, _ROWS) for k in range(r // _ROWS)]  # of this CTA's units
    cols = pl.ds(jax.lax.axis_index("b") * _BT, _BT)
    own, full_rows, packed_rows = _own_rows(plan)
    mine = pl.ds(own, r)

    def time_index(t):
        return steps - 1 - t if plan.reverse else t

    load_own = partial(_copy_gates, gates, src_rows=full_rows, dst_rows=packed_rows)

    def fetch(t, slot):
        ti = time_index(t)
        load_own(gx_ref.at[ti, :, cols], gx_smem.at[slot], barrier=ring_bars.at[slot])
        if plan.masked:
            plgpu.copy_gmem_to_smem(m_ref.at[ti, :, cols], scratch["mask"].at[slot], ring_bars.at[slot])

    load_own(ut_ref, ut_smem, barrier=once_bar)
    plgpu.copy_gmem_to_smem(hin_ref.at[:, cols], h_smem, once_bar)  # the first product's input, for all units
    plgpu.copy_gmem_to_smem(h0_ref.at[mine, cols], st_smem.at[0], once_bar)
    if lstm:
        plgpu.copy_gmem_to_smem(c0_ref.at[mine, cols], st_smem.at[1], once_bar)
    else:
        load_own(b_ref, scratch["bias"], barrier=once_bar)
    for s in range(min(stages, steps)):
        fetch(s, s)
    plgpu.barrier_wait(once_bar)
    h = tuple(wg(st_smem[0, rows]) for rows in blocks)
    c = tuple(wg(st_smem[1, rows]) for rows in blocks) if lstm else ()
    keep_h = None  # the recurrent dropout mask, in registers for all steps
    if plan.dropped:  # staged through st_smem[0] once every thread has read h0 from it
        plgpu.commit_smem()
        plgpu.copy_gmem_to_smem(dm_ref.at[mine, cols], st_smem.at[0], scratch["drop_bar"])
        plgpu.barrier_wait(scratch["drop_bar"])
        keep_h = tuple(wg(st_smem[0, rows]) for rows in blocks)

    def rec_product(gate, rows):  # (64, BT) = U^T[gate block, these units] @ h^T, f32
        return _tensor_core_sum([(ut_smem.at[pl.ds(gate * r + rows.start, _ROWS)], h_smem)])

    def step(t, carry):
        h, c = carry
        slot = jax.lax.rem(t, stages)
        plgpu.barrier_wait(ring_bars.at[slot])
        keep = wg(scratch["mask"][slot]) > 0 if plan.masked else None
        new_h, new_c = [], []
        for k, rows in enumerate(blocks):
            hr = [rec_product(g, rows) for g in range(gates)]
            gx = [wg(gx_smem[slot, pl.ds(g * r + rows.start, _ROWS)]) for g in range(gates)]
            if lstm:
                i, f, c_hat, o = (a + b for a, b in zip(gx, hr, strict=True))
                c_k = ract(f) * c[k] + ract(i) * act(c_hat)
                h_k = ract(o) * act(c_k)
                if keep is not None:
                    c_k = jnp.where(keep, c_k, c[k])
                new_c.append(c_k)
            else:
                hr = [a + wg(scratch["bias"][pl.ds(g * r + rows.start, _ROWS)]) for g, a in enumerate(hr)]
                z = ract(gx[0] + hr[0])
                r_gate = ract(gx[1] + hr[1])
                h_k = z * h[k] + (1.0 - z) * act(gx[2] + r_gate * hr[2])
            if keep is not None:
                h_k = jnp.where(keep, h_k, h[k])
            new_h.append(h_k)
        ti = time_index(t)
        plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # the last step's stores have read the staging
        for k, (rows, h_k) in enumerate(zip(blocks, new_h, strict=True)):
            st_smem[0, rows] = h_k
            # The next product's input: h, or h * mask under recurrent dropout.
            h_smem[pl.ds(own + rows.start, _ROWS)] = (h_k if keep_h is None else h_k * keep_h[k]).astype(jnp.bfloat16)
        for rows, c_k in zip(blocks, new_c, strict=lstm):
            st_smem[1, rows] = c_k
        plgpu.commit_smem()
        if plan.cluster > 1:  # this CTA's part of the next input, for the others (see _exchange)
            plgpu.copy_smem_to_gmem(h_smem.at[mine], xh_ref.at[t % 2, mine, cols])
            plgpu.commit_smem_to_gmem_group()
        plgpu.copy_smem_to_gmem(st_smem.at[0], hs_ref.at[ti, mine, cols])
        if lstm:
            plgpu.copy_smem_to_gmem(st_smem.at[1], cs_ref.at[ti, mine, cols])
        plgpu.commit_smem_to_gmem_group()
        if plan.cluster > 1:
            gather = partial(plgpu.copy_gmem_to_smem, xh_ref.at[t % 2, :, cols], h_smem)
            _exchange(plan, scratch, gather)

        @pl.when(t + stages < steps)
        def _():
            fetch(t + stages, slot)

        return tuple(new_h), tuple(new_c)

    jax.lax.fori_loop(0, steps, step, (h, c))
    plgpu.wait_smem_to_gmem(0)


def _exchange(plan: _Plan, scratch, gather):
    """Tier B: every CTA of the cluster has stored its units' part of the next product input to GMEM
    (the second-to-last store group); wait for that, meet at the cluster barrier, load everyone's.

    Mosaic GPU's cluster barrier arrives and waits at CTA scope and TMA is the async proxy, so
    ``_fence`` emits cluster-scope and proxy fences around it on the GPU; whether they
    are all needed only a GPU can say (the interpreter's memory has neither scopes nor proxies).
    Two GMEM slots alternate by step: a CTA overwrites slot ``t % 2`` at step ``t + 2`` only after
    the barrier of step ``t + 1``, which every CTA reaches after its load of step ``t`` has landed.
    """
    import jax.experimental.pallas.mosaic_gpu as plgpu

    plgpu.wait_smem_to_gmem(1)  # the exchange store has landed; this step's state stores may not have
    _fence(plan, "fence.proxy.async.global; fence.acq_rel.cluster;")  # TMA's writes, released to the cluster
    plgpu.barrier_arrive(scratch["cluster_bar"])
    plgpu.barrier_wait(scratch["cluster_bar"])
    _fence(plan, "fence.acq_rel.cluster; fence.proxy.async.global;")  # the others' writes, for our TMA loads
    gather(scratch["gather_bar"])
    plgpu.barrier_wait(scratch["gather_bar"])


def _exchange_buffers(plan: _Plan, rows: int, copies: int, scratch) -> tuple:
    """Tier B: adds ``_exchange``'s barriers to ``scratch``; returns its GMEM buffer's type, an extra output.

    The buffer is two slots of ``(rows, batch)`` bf16; ``copies`` TMA loads gather a slot.
    """
    import jax.experimental.pallas.mosaic_gpu as plgpu

    scratch["cluster_bar"] = plgpu.ClusterBarrier(collective_axes=("c",))
    scratch["gather_bar"] = plgpu.Barrier(num_arrivals=copies)
    return (jax.ShapeDtypeStruct((2, rows, plan.batch), jnp.bfloat16),)


def _fence(plan: _Plan, ptx: str):
    """``ptx`` (memory fences) inline on the GPU; nothing in the interpreter, which runs no PTX."""
    if plan.interpret:
        return
    import jax.experimental.pallas.mosaic_gpu as plgpu
    from jax._src.lib.mlir import ir
    from jax._src.lib.mlir.dialects import llvm

    @plgpu.inline_mgpu()
    def fence(_ctx):
        llvm.inline_asm(ir.Type.parse("!llvm.void"), [], ptx, "", has_side_effects=True)

    fence()


def _launch(plan: _Plan, inputs):
    """The forward kernel on transposed, padded operands (``_states``): ``(hs, cs)``, each ``(T, units, batch)`` f32."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    stages = _stages(plan.kind, plan.units, plan.masked)
    u, r, gates = plan.units, plan.rows, plan.gates
    swizzle = (plgpu.TilingTransform((8, _BT)), plgpu.SwizzleTransform(_BT * 2))  # A's and B's must match
    scratch = {
        "ut": plgpu.SMEM((gates * r, u), jnp.bfloat16, transforms=swizzle),  # this CTA's rows of U^T
        "h": plgpu.SMEM((u, _BT), jnp.bfloat16, transforms=swizzle),  # h^T, the product's B operand
        "state": plgpu.SMEM((plan.state_count, r, _BT), jnp.float32),  # staging for the TMA stores
        "gx": plgpu.SMEM((stages, gates * r, _BT), jnp.float32),  # the gx ring
        "ring_bars": plgpu.Barrier(num_arrivals=gates + plan.masked, num_barriers=stages),
        # U^T, the first input, h0, and c0 or the bias
        "once_bar": plgpu.Barrier(num_arrivals=gates + 3 if plan.kind == "lstm" else 2 * gates + 2),
    }
    if plan.masked:
        scratch["mask"] = plgpu.SMEM((stages, _ROWS, _BT), jnp.float32)  # one tile per step
    if plan.kind == "gru":
        scratch["bias"] = plgpu.SMEM((gates * r, _BT), jnp.float32)  # the recurrent bias
    if plan.dropped:
        scratch["drop_bar"] = plgpu.Barrier(num_arrivals=1)  # the dropout mask's load
    out = jax.ShapeDtypeStruct((plan.steps, u, plan.batch), jnp.float32)
    outs = (out,) * plan.state_count
    if plan.cluster > 1:  # h's exchange, gathered in one copy
        outs += _exchange_buffers(plan, u, copies=1, scratch=scratch)
    outs = _call(plan, partial(_kernel_body, plan, stages), outs, scratch, inputs)
    return outs[0], (outs[1] if plan.kind == "lstm" else None)


def _call(plan: _Plan, body, out_types, scratch, inputs):
    """``body`` as a Mosaic GPU kernel over batch tiles (in the interpreter, with race detection).

    In Tier B each batch tile is a cluster of ``plan.cluster`` CTAs (axis ``"c"``).
    """
    import jax.experimental.pallas.mosaic_gpu as plgpu

    interpret = None
    if plan.interpret:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

        interpret = InterpretGPUParams(detect_races=True)
    cluster = dict(cluster=(plan.cluster,), cluster_names=("c",)) if plan.cluster > 1 else {}
    kernel = plgpu.kernel(
        body,
        out_type=tuple(out_types),
        scratch_types=scratch,
        grid=(plan.batch // _BT,),
        grid_names=("b",),
        interpret=interpret,
        **cluster,
    )
    return kernel(*inputs)


def _bwd_kernel_body(plan: _Plan, stages: int, *refs, **scratch):
    """Reverse time: per step the gate math's vjp in float32, then ``dh_prev = U @ d_rec`` on the tensor core.

    Inputs per step (transposed, as the forward's): the pre-activations (LSTM: ``gx + hr``; GRU:
    ``gx`` and ``hr``), the state the step started from (LSTM: ``c``; GRU: ``h``) and ``dh``, the
    gradient of the step's output state from outside the recurrence. The pre-activation gradients
    are written over the ring slot they were read from and stored from there. In Tier B each CTA
    computes its units' ``d_rec`` and ``dh_prev``; the product needs every unit's ``d_rec``, which
    the cluster exchanges through GMEM as the forward exchanges ``h``.
    """
    import jax.experimental.pallas as pl
    import jax.experimental.pallas.mosaic_gpu as plgpu

    lstm, gates, u, r, steps = plan.kind == "lstm", plan.gates, plan.units, plan.rows, plan.steps
    refs = list(refs)
    pre_ref = refs.pop(0)
    hr_ref = None if lstm else refs.pop(0)
    sp_ref, dh_ref, u_ref = refs.pop(0), refs.pop(0), refs.pop(0)
    dc_ref = refs.pop(0) if lstm else None
    m_ref = refs.pop(0) if plan.masked else None
    dm_ref = refs.pop(0) if plan.dropped else None
    dpre_out = refs.pop(0)
    dhr_out = None if lstm else refs.pop(0)
    dh0_out = refs.pop(0)
    dc0_out = refs.pop(0) if lstm else None
    xd_ref = refs.pop(0) if plan.cluster > 1 else None
    u_smem, d_smem, pre_ring, hr_ring = scratch["u"], scratch["d"], scratch["pre"], scratch.get("hr")
    sp_ring, dh_ring, m_ring, fin_smem = scratch["prev"], scratch["dh"], scratch.get("mask"), scratch["final"]
    ring_bars, once_bar = scratch["ring_bars"], scratch["once_bar"]

    wg = partial(_wg, plan)
    act = _KERNEL_FORMS.get(plan.activation, plan.activation)
    ract = _KERNEL_FORMS.get(plan.recurrent_activation, plan.recurrent_activation)
    blocks = [pl.ds(k * _ROWS, _ROWS) for k in range(r // _ROWS)]  # of this CTA's units
    cols = pl.ds(jax.lax.axis_index("b") * _BT, _BT)
    own, full_rows, packed_rows = _own_rows(plan)
    mine = pl.ds(own, r)
    load_own = partial(_copy_gates, gates, src_rows=full_rows, dst_rows=packed_rows)
    store_own = partial(_copy_gates, gates, src_rows=packed_rows, dst_rows=full_rows)

    def lstm_cell(zi, zf, zg, zo, c_prev):
        c = ract(zf) * c_prev + ract(zi) * act(zg)
        return ract(zo) * act(c), c

    def gru_cell(xz, xr, xh, hz, hr, hh, h_prev):
        z = ract(xz + hz)
        return z * h_prev + (1.0 - z) * act(xh + ract(xr + hr) * hh)

    def time_index(s):  # the forward's last step comes first
        return s if plan.reverse else steps - 1 - s

    def fetch(s, slot):
        ti, bar = time_index(s), ring_bars.at[slot]
        load_own(pre_ref.at[ti, :, cols], pre_ring.at[slot], barrier=bar)
        if not lstm:
            load_own(hr_ref.at[ti, :, cols], hr_ring.at[slot], barrier=bar)
        plgpu.copy_gmem_to_smem(sp_ref.at[ti, mine, cols], sp_ring.at[slot], bar)
        plgpu.copy_gmem_to_smem(dh_ref.at[ti, mine, cols], dh_ring.at[slot], bar)
        if plan.masked:
            plgpu.copy_gmem_to_smem(m_ref.at[ti, :, cols], m_ring.at[slot], bar)

    load_own(u_ref, u_smem, barrier=once_bar)
    if lstm:
        plgpu.copy_gmem_to_smem(dc_ref.at[mine, cols], fin_smem.at[1], once_bar)
    if plan.dropped:  # fin_smem[0] is free until the end
        plgpu.copy_gmem_to_smem(dm_ref.at[mine, cols], fin_smem.at[0], once_bar)
    for s in range(min(stages, steps)):
        fetch(s, s)
    plgpu.barrier_wait(once_bar)
    dh = tuple(wg(jnp.zeros((_ROWS, _BT), jnp.float32)) for _ in blocks)
    dc = tuple(wg(fin_smem[1, rows]) for rows in blocks) if lstm else ()
    # The recurrent dropout mask: the product's input was h * mask, so its gradient is masked too.
    keep_h = tuple(wg(fin_smem[0, rows]) for rows in blocks) if plan.dropped else None

    def rec_product(rows):  # (64, BT) = sum over gates of U_g[these units] @ d_rec_g^T, f32
        return _tensor_core_sum(
            [(u_smem.at[pl.ds(g * r + rows.start, _ROWS)], d_smem.at[pl.ds(g * u, u)]) for g in range(gates)]
        )

    def step(s, carry):
        dh, dc = carry
        slot = jax.lax.rem(s, stages)
        plgpu.barrier_wait(ring_bars.at[slot])
        keep = wg(m_ring[slot]) > 0 if plan.masked else None
        new_dc, direct = [], []  # direct: the part of dh_prev that is not U @ d_rec

        def put(ring, g, rows, d):
            ring[slot, pl.ds(g * r + rows.start, _ROWS)] = d

        for k, rows in enumerate(blocks):
            d_h = dh[k] + wg(dh_ring[slot, rows])
            if lstm:
                z = [wg(pre_ring[slot, pl.ds(g * r + rows.start, _ROWS)]) for g in range(gates)]
                *d_rec, d_c = _kernel_vjp(lstm_cell, (*z, wg(sp_ring[slot, rows])), (d_h, dc[k]))
                d_hp = None
            else:
                x = [wg(pre_ring[slot, pl.ds(g * r + rows.start, _ROWS)]) for g in range(gates)]
                hr = [wg(hr_ring[slot, pl.ds(g * r + rows.start, _ROWS)]) for g in range(gates)]
                grads = _kernel_vjp(gru_cell, (*x, *hr, wg(sp_ring[slot, rows])), d_h)
                d_in, d_rec, d_hp = grads[:gates], grads[gates : 2 * gates], grads[-1]
            if keep is not None:  # a masked step passes the state's gradients through
                d_rec = [jnp.where(keep, d, 0.0) for d in d_rec]
                if lstm:
                    d_c = jnp.where(keep, d_c, dc[k])
                else:
                    d_in = [jnp.where(keep, d, 0.0) for d in d_in]
                d_hp = jnp.where(keep, 0.0 if d_hp is None else d_hp, d_h)
            direct.append(d_hp)
            for g in range(gates):
                put(pre_ring, g, rows, d_rec[g] if lstm else d_in[g])
                if not lstm:
                    put(hr_ring, g, rows, d_rec[g])
                d_smem[pl.ds(g * u + own + rows.start, _ROWS)] = d_rec[g].astype(jnp.bfloat16)
            if lstm:
                new_dc.append(d_c)
        plgpu.commit_smem()
        ti = time_index(s)
        if plan.cluster > 1:  # this CTA's units of d_rec, for the others (see _exchange)
            _copy_gates(gates, d_smem, xd_ref.at[s % 2, :, cols], full_rows, full_rows)
            plgpu.commit_smem_to_gmem_group()
        store_own(pre_ring.at[slot], dpre_out.at[ti, :, cols])
        if not lstm:
            store_own(hr_ring.at[slot], dhr_out.at[ti, :, cols])
        plgpu.commit_smem_to_gmem_group()
        if plan.cluster > 1:
            whole = lambda g: pl.ds(g * u, u)  # noqa: E731
            gather = partial(_copy_gates, gates, xd_ref.at[s % 2, :, cols], d_smem, whole, whole)
            _exchange(plan, scratch, gather)
        new_dh = []
        for k, (rows, d_hp) in enumerate(zip(blocks, direct, strict=True)):
            d = rec_product(rows) if keep_h is None else rec_product(rows) * keep_h[k]
            new_dh.append(d if d_hp is None else d + d_hp)
        # Refill the slot of step j with step j + stages once its stores have read it: the previous
        # step's (one store group may stay in flight), or this step's when the ring has one slot.
        lag = 0 if stages == 1 else 1
        j = s - lag

        @pl.when((j >= 0) & (j + stages < steps))
        def _():
            plgpu.wait_smem_to_gmem(lag, wait_read_only=True)
            fetch(j + stages, jax.lax.rem(j, stages))

        return tuple(new_dh), tuple(new_dc)

    dh, dc = jax.lax.fori_loop(0, steps, step, (dh, dc))
    for i, state in enumerate((dh, dc) if lstm else (dh,)):
        for rows, d in zip(blocks, state, strict=True):
            fin_smem[i, rows] = d
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(fin_smem.at[0], dh0_out.at[mine, cols])
    if lstm:
        plgpu.copy_smem_to_gmem(fin_smem.at[1], dc0_out.at[mine, cols])
    plgpu.commit_smem_to_gmem_group()
    plgpu.wait_smem_to_gmem(0)


def _launch_bwd(plan: _Plan, inputs):
    """The backward kernel on transposed, padded operands (see ``_grads``)."""
    import jax.experimental.pallas.mosaic_gpu as plgpu

    stages = _bwd_stages(plan.kind, plan.units, plan.masked)
    u, r, gates, lstm = plan.units, plan.rows, plan.gates, plan.kind == "lstm"
    swizzle = (plgpu.TilingTransform((8, _BT)), plgpu.SwizzleTransform(_BT * 2))
    ring = plgpu.SMEM((stages, gates * r, _BT), jnp.float32)  # this CTA's units of every gate
    scratch = {
        "u": plgpu.SMEM((gates * r, u), jnp.bfloat16, transforms=swizzle),  # this CTA's rows of each U_g
        "d": plgpu.SMEM((gates * u, _BT), jnp.bfloat16, transforms=swizzle),  # d_rec^T, the product's B operand
        "pre": ring,  # pre-activations in, their gradients out
        "prev": plgpu.SMEM((stages, r, _BT), jnp.float32),  # the state each step started from
        "dh": plgpu.SMEM((stages, r, _BT), jnp.float32),  # dh from outside the recurrence
        "final": plgpu.SMEM((plan.state_count, r, _BT), jnp.float32),  # dc in, d_state0 out
    }
    if not lstm:
        scratch["hr"] = ring  # the GRU's hr and d_hr
    if plan.masked:
        scratch["mask"] = plgpu.SMEM((stages, _ROWS, _BT), jnp.float32)
    per_step = gates * (1 if lstm else 2) + 2 + plan.masked
    scratch["ring_bars"] = plgpu.Barrier(num_arrivals=per_step, num_barriers=stages)
    scratch["once_bar"] = plgpu.Barrier(num_arrivals=gates + lstm + plan.dropped)  # U, dc, the dropout mask
    d_pre = jax.ShapeDtypeStruct((plan.steps, gates * u, plan.batch), jnp.float32)
    d_state = jax.ShapeDtypeStruct((u, plan.batch), jnp.float32)
    outs = [d_pre] * (1 if lstm else 2) + [d_state] * plan.state_count
    if plan.cluster > 1:  # d_rec's exchange, gathered in one copy per gate
        outs += _exchange_buffers(plan, gates * u, copies=gates, scratch=scratch)
    outs = _call(plan, partial(_bwd_kernel_body, plan, stages), outs, scratch, inputs)
    return outs[: len(outs) - (plan.cluster > 1)]


def _pad_gates(a, gates, units, padded):
    """``(..., G*units) -> (..., G, padded)`` with zeros: padded units never reach real ones."""
    a = a.reshape(*a.shape[:-1], gates, units)
    return jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, padded - units)])


# The kernels' layout: units (padded to u, per gate) are rows, the batch (padded to b) columns.
def _cols(a, u, b):
    """``(..., B, n) -> (..., u, b)`` float32, zero-padded and transposed."""
    pad = [(0, 0)] * (a.ndim - 2) + [(0, b - a.shape[-2]), (0, u - a.shape[-1])]
    return jnp.swapaxes(jnp.pad(a.astype(jnp.float32), pad), -1, -2)


def _gate_cols(a, gates, u, b):
    """``(..., B, G*n) -> (..., G*u, b)``: each gate's units padded to ``u``."""
    a = _pad_gates(a, gates, a.shape[-1] // gates, u)
    return _cols(a.reshape(*a.shape[:-2], gates * u), gates * u, b)


def _uncols(a, units, batch):
    """The inverse of ``_cols``: ``(..., u, b) -> (..., batch, units)``."""
    return jnp.swapaxes(a, -1, -2)[..., :batch, :units]


def _ungate_cols(a, gates, units, batch):
    """The inverse of ``_gate_cols``: ``(..., G*u, b) -> (..., batch, G*units)``."""
    a = jnp.swapaxes(a, -1, -2)[..., :batch, :]
    a = a.reshape(*a.shape[:-1], gates, -1)[..., :units]
    return a.reshape(*a.shape[:-2], gates * units)


def _mask_tiles(mask, b):
    """``(T, B)`` -> ``(T, 64, b)`` float32: one accumulator-shaped tile per step, for ``where``."""
    m = jnp.pad(mask.astype(jnp.float32), [(0, 0), (0, b - mask.shape[1])])
    return jnp.broadcast_to(m[:, None, :], (mask.shape[0], _ROWS, b))


def _u_blocks(u_w, gates, u, transpose):
    """``U`` (units, G*units) -> (G*u, u) bf16, zero-padded; gate block g is ``U_g^T`` or ``U_g``."""
    units = u_w.shape[0]
    a = _pad_gates(u_w.astype(jnp.float32), gates, units, u)  # (units, G, u)
    a = jnp.pad(a, [(0, u - units), (0, 0), (0, 0)])  # (u: h unit, G, u: gate unit)
    a = a.transpose(1, 2, 0) if transpose else a.transpose(1, 0, 2)
    return a.reshape(gates * u, u).astype(jnp.bfloat16)


class _Static(NamedTuple):
    kind: str
    activation: Any
    recurrent_activation: Any
    reverse: bool
    zero_output: bool
    interpret: bool


def _plan(st: _Static, steps, units, batch, masked, dropped) -> _Plan:
    u, b = _round_up(units, _ROWS), _round_up(batch, _BT)
    return _Plan(
        st.kind, st.activation, st.recurrent_activation, steps, u, b, masked, st.reverse, st.interpret, dropped
    )


def _states(st: _Static, wt: Weights, gx, state0, mask, rec_drop):
    """Per-step states, time-major ``(T, B, units)`` f32: ``(hs, cs)`` (``cs`` is None for the GRU).

    ``rec_drop`` is the recurrent dropout mask ``(1, B, units)``, or None.
    """
    batch, units = gx.shape[1], wt.u.shape[0]
    plan = _plan(st, gx.shape[0], units, batch, mask is not None, rec_drop is not None)
    gates, u, b = plan.gates, plan.units, plan.batch
    h0 = state0.h.astype(jnp.float32)
    h_in = h0 if rec_drop is None else h0 * rec_drop[0].astype(jnp.float32)  # the first product's input
    ut = _u_blocks(wt.u, gates, u, transpose=True)
    inputs = [_gate_cols(gx, gates, u, b), ut, _cols(h_in, u, b).astype(jnp.bfloat16), _cols(h0, u, b)]
    if st.kind == "lstm":
        inputs.append(_cols(state0.c, u, b))
    else:  # the recurrent bias, broadcast over a batch tile
        b_rec = jnp.zeros((gates * units,), jnp.float32) if wt.b_rec is None else wt.b_rec.astype(jnp.float32)
        inputs.append(jnp.broadcast_to(_pad_gates(b_rec, gates, units, u).reshape(-1, 1), (gates * u, _BT)))
    if mask is not None:
        inputs.append(_mask_tiles(mask, b))
    if rec_drop is not None:
        inputs.append(_cols(rec_drop[0], u, b))
    hs_t, cs_t = _launch(plan, inputs)
    return _uncols(hs_t, units, batch), None if cs_t is None else _uncols(cs_t, units, batch)


def _grads(st: _Static, wt: Weights, pre, prev_state, d_hs, dc_final, mask, rec_drop):
    """The backward kernel: ``(d_gx, d_hr, d_state0)``, time-major float32 (``d_hr is d_gx`` for the LSTM).

    ``pre`` is ``(gx + hr,)`` for the LSTM and ``(gx, hr)`` for the GRU (``hr`` with its bias),
    ``prev_state`` the per-step starting ``c`` (LSTM) or ``h`` (GRU), ``d_hs`` the gradients of the
    per-step ``h`` from outside the recurrence and ``dc_final`` the final ``c``'s (LSTM).
    """
    steps, batch, units = d_hs.shape
    plan = _plan(st, steps, units, batch, mask is not None, rec_drop is not None)
    gates, u, b = plan.gates, plan.units, plan.batch
    inputs = [_gate_cols(a, gates, u, b) for a in pre]
    inputs += [_cols(prev_state, u, b), _cols(d_hs, u, b), _u_blocks(wt.u, gates, u, transpose=False)]
    if dc_final is not None:
        inputs.append(_cols(dc_final, u, b))
    if mask is not None:
        inputs.append(_mask_tiles(mask, b))
    if rec_drop is not None:
        inputs.append(_cols(rec_drop[0], u, b))
    outs = _launch_bwd(plan, inputs)
    d_gx = _ungate_cols(outs[0], gates, units, batch)
    d_hr = d_gx if st.kind == "lstm" else _ungate_cols(outs[1], gates, units, batch)
    return d_gx, d_hr, tuple(_uncols(a, units, batch) for a in outs[-plan.state_count :])


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
    hs, cs = _states(st, wt, gx, state0, mask, drop.rec)
    return (*_head(st, hs, cs, mask), (gx, hs, cs))


def _head(st: _Static, hs, cs, mask):
    """``(ys, final_state)`` from the kernel's per-step states (XLA, differentiated by ``jax.vjp``)."""
    last = 0 if st.reverse else -1
    final = LSTMState(hs[last], cs[last]) if st.kind == "lstm" else GRUState(hs[last])
    return _outputs(hs, mask, st.reverse, st.zero_output), final


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _pallas_fused(st: _Static, wt: Weights, xs, state0, mask, drop: Dropout):
    """``(ys, final_state)`` of the recurrence, time-major, float32: ``_engine.fused``'s contract."""
    ys, final, _ = _run(st, wt, xs, state0, mask, drop)
    return ys, final


def _pallas_fwd(st, wt, xs, state0, mask, drop):
    ys, final, (gx, hs, cs) = _run(st, wt, xs, state0, mask, drop)
    return (ys, final), (wt, xs, state0, mask, drop, gx, hs, cs)


def _pallas_bwd(st, saved, cotangents):
    wt, xs, state0, mask, drop, gx, hs, cs = saved
    dys, dfinal = cotangents
    lstm = st.kind == "lstm"
    # Through the head to the per-step h gradients; c's only cotangent is the final state's.
    _, head_vjp = jax.vjp(lambda h: _head(st, h, cs, mask), hs)
    (d_hs,) = head_vjp((dys, dfinal))

    def previous(per_step, first):  # the state each step started from, in time order
        first = first[None].astype(jnp.float32)
        if st.reverse:
            return jnp.concatenate([per_step[1:], first])
        return jnp.concatenate([first, per_step[:-1]])

    prev_h = previous(hs, state0.h)
    # hr as the forward kernel computed it (bf16 operands, h masked first), with one large matmul.
    h_in = prev_h if drop.rec is None else prev_h * drop.rec[:1].astype(jnp.float32)
    hr = jnp.matmul(h_in.astype(jnp.bfloat16), wt.u.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    if wt.b_rec is not None:
        hr = _engine._add_bias(hr, wt.b_rec)
    if lstm:
        d_gx, d_hr, d_state0 = _grads(st, wt, (gx + hr,), previous(cs, state0.c), d_hs, dfinal.c, mask, drop.rec)
        d_state0 = LSTMState(*d_state0)
    else:
        d_gx, d_hr, d_state0 = _grads(st, wt, (gx, hr), prev_h, d_hs, None, mask, drop.rec)
        d_state0 = GRUState(*d_state0)
    d_wt, dxs = _engine._weight_grads(wt, xs, drop, prev_h, None, (d_gx,), (d_hr,), None)
    return _engine.primal_cotangents(state0, mask, drop, d_wt, dxs, d_state0)


_pallas_fused.defvjp(_pallas_fwd, _pallas_bwd)
# Its own jit, as ``_engine.fused``: eager calls compile once per static arguments and shapes.
pallas_fused = jax.jit(_pallas_fused, static_argnums=(0,))

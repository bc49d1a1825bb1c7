"""Fused LSTM, GRU (both reset forms) and SimpleRNN on the engine, and the eligibility rules.

The reference for every fused kernel is ``jrnn.run(cell.step, ...)``: same params pytree, same
arguments, same results (tests compare values and gradients).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jrnn import activations
from jrnn._dropout import DropoutMasks
from jrnn._errors import message
from jrnn._masking import check_mask
from jrnn._types import Cell
from jrnn.cells import GRUState, LSTMState, SimpleRNNState
from jrnn.kernels._engine import Dropout, Spec, Weights, _after, _swap, fused
from jrnn.kernels._pallas import _Static, interpreter_runs_clusters, pallas_eligible, pallas_fused, uses_cluster


def _h(state):
    return state.h


# Activations of the form ``a * tanh(k * x) + b``: ``(a, k, b)``. Their slope is ``a * k * (1 -
# tanh(k * x) ** 2)``, so one tanh gives both the values and the slopes.
_TANH_FORMS = {activations.tanh: (1.0, 1.0, 0.0), activations.sigmoid: (0.5, 0.5, 0.5)}


def _one_tanh(activation, recurrent_activation):
    """Whether both activations are ``_TANH_FORMS``: the gate math's values and slopes from one tanh."""
    return {activation, recurrent_activation} <= _TANH_FORMS.keys()


def _value_and_slope(form, x):
    """An activation of ``_TANH_FORMS`` at ``x`` and its slope there; ``a, k, b`` scalars or per column."""
    a, k, b = form
    th = jnp.tanh(x * k)
    return th * a + b, (a * k) * (1.0 - th * th)


def _lstm_vjp(activation, recurrent_activation):
    """The LSTM gate math's vjp for tanh/sigmoid activations, in full-width operations; for other
    built-in activations ``_lstm_vjp_slopes``'s; else ``None``.

    ``jax.vjp`` of the gate math slices ``pre`` into the four gates and takes each activation and its
    derivative apart: on XLA:CPU ten operations and a concatenate of four gate gradients per backward
    step. Here one ``tanh(k * pre)`` gives all four activations and their slopes, and the gate
    gradients are one product: eight smaller operations and a cheaper concatenate. The gain in
    fwd+bwd is small, the matmuls dominate: -2.5% at (16, 64, 32, 64) and -3% at (32, 128, 128, 256)
    over many shuffled rounds (with the backward's dropped zero carry), within the noise in the
    recorded run (bench/results/ab_fused.md). Saving the gate values in the forward instead of
    ``pre`` would skip the backward's tanh: before ``_engine._write_last`` XLA copied the whole
    saved buffer twice per step (3x slower); with it, fwd+bwd was still 7-8% slower at the two
    smaller sizes, the gate fusions reading column slices of the saved step as scalar code
    (as four buffers, one per gate: no faster than saving ``pre``; ab_fused.md).
    """
    if not _one_tanh(activation, recurrent_activation):
        return _lstm_vjp_slopes(activation, recurrent_activation)
    forms = _lstm_forms(activation, recurrent_activation)

    def vjp(pieces, state, d_y, d_new):
        (pre,) = pieces  # gx + hr
        gates, slopes = _value_and_slope(_columns(forms, pre), pre)

        def scale(d_gates):  # one product at full width
            return jnp.concatenate(d_gates, axis=-1) * slopes

        return _lstm_gate_grads(jnp.split(gates, 4, axis=-1), scale, _slopes_of(activation), state, d_y, d_new)

    return vjp


def _lstm_forms(activation, recurrent_activation):
    """The ``_TANH_FORMS`` of the LSTM's gates, in their column order (i, f, c_hat, o)."""
    ra, ca = _TANH_FORMS[recurrent_activation], _TANH_FORMS[activation]
    return [ra, ra, ca, ra]


def _columns(forms, x):
    """``(a, k, b)`` of ``_TANH_FORMS``, one value per column of ``x``, whose columns are one equal
    block per form; shaped to broadcast against ``x`` (rank promotion is an error in tests)."""
    units = x.shape[-1] // len(forms)
    shape = (1,) * (x.ndim - 1) + (-1,)
    return [jnp.repeat(jnp.array(c, jnp.float32), units).reshape(shape) for c in zip(*forms, strict=True)]


def _lstm_gates(activation, recurrent_activation):
    """``pre -> (i, f, c_hat, o)``, the LSTM's gate values from its pre-activations.

    With tanh/sigmoid, one ``tanh(k * pre)`` at full width, as ``_lstm_vjp`` computes them: against
    an activation per gate slice, the forward at (32, 128, 128, 256) took 5-6% less in three A/B
    runs; at the other two sizes of bench/cpu.py, and forward+backward, the runs were within their
    noise (bench/results/ab_fused.md).
    """
    if not _one_tanh(activation, recurrent_activation):

        def gates(pre):
            i, f, c_hat, o = jnp.split(pre, 4, axis=-1)
            return recurrent_activation(i), recurrent_activation(f), activation(c_hat), recurrent_activation(o)

        return gates
    forms = _lstm_forms(activation, recurrent_activation)

    def gates_tanh(pre):  # the slopes are left unused (and compiled away)
        return tuple(jnp.split(_value_and_slope(_columns(forms, pre), pre)[0], 4, axis=-1))

    return gates_tanh


def _lstm_gate_grads(gates, scale, act_slopes, state, d_y, d_new):
    """The LSTM closed forms' shared part: from the gates ``(i, f, c_hat, o)``, ``(d_pre,), d_state``.

    ``scale`` takes the gradients of the four gate values to the pre-activations' (joined), and
    ``act_slopes`` is ``_slopes_of(activation)``, for ``c``.
    """
    i, f, c_hat, o = gates
    act_c, slope_c = act_slopes(f * state.c + i * c_hat)
    d_h = d_y + d_new.h
    d_c = d_new.c + d_h * o * slope_c
    d_gates = scale([d_c * c_hat, d_c * state.c, d_c * i, d_h * act_c])
    return (d_gates,), LSTMState(h=jnp.zeros_like(state.h), c=d_c * f)


# jrnn's built-in activations: each acts element by element, so its jvp with a unit tangent is its slope.
_ELEMENTWISE = frozenset(activations._BY_NAME.values())


def _value_and_slope_jvp(fn, x):
    """An element-wise activation at ``x`` and its slope there, as ``jax.grad`` takes it at kinks."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))


def _slopes_of(activation):
    """``x -> (activation(x), its slope)``: one tanh for ``_TANH_FORMS``, else the jvp."""
    if activation in _TANH_FORMS:
        return functools.partial(_value_and_slope, _TANH_FORMS[activation])
    return functools.partial(_value_and_slope_jvp, activation)


def _lstm_vjp_slopes(activation, recurrent_activation):
    """The LSTM gate math's vjp for other built-in activations (``_lstm_vjp``'s, slopes by jvp); else ``None``.

    jrnn's default LSTM has hard_sigmoid gates, whose gradients came from ``jax.vjp`` of the gate
    math: this took its fwd+bwd 23-24% lower at (16, 64, 32, 64) and (32, 128, 128, 256)
    (bench/results/ab_fused.md). The three recurrent-activation gates go through one call: taken
    gate by gate, XLA recomputed them from the saved pre-activations after the step's write and
    copied the whole buffer every step (3x slower; the test for those copies covers this cell).
    """
    if not {activation, recurrent_activation} <= _ELEMENTWISE:
        return None  # a user's callable may mix elements: jax.vjp of the gate math
    rec_slopes, slopes = _slopes_of(recurrent_activation), _slopes_of(activation)

    def vjp(pieces, state, d_y, d_new):
        (pre,) = pieces  # gx + hr
        p_i, p_f, p_c, p_o = jnp.split(pre, 4, axis=-1)
        ifo, slopes_ifo = rec_slopes(jnp.concatenate([p_i, p_f, p_o], axis=-1))
        (i, f, o), (s_i, s_f, s_o) = jnp.split(ifo, 3, axis=-1), jnp.split(slopes_ifo, 3, axis=-1)
        c_hat, s_c = slopes(p_c)

        def scale(d_gates):  # gate by gate, then joined
            return jnp.concatenate([d * s for d, s in zip(d_gates, (s_i, s_f, s_c, s_o), strict=True)], axis=-1)

        return _lstm_gate_grads((i, f, c_hat, o), scale, slopes, state, d_y, d_new)

    return vjp


def _gru_reset_before_vjps(activation, recurrent_activation):
    """The reset-before GRU's gate math vjp, ``Spec.mid_vjps``, for built-in activations; else ``None``.

    jrnn's default GRU (hard_sigmoid, reset_after=False). With ``a = r * h`` and ``s = a @ U_h``:
    the first stage gives z's and the candidate's pre-activation gradients and ``d_s``; the second,
    from ``d_a``, r's, and adds both stages' state gradients.
    """
    if not {activation, recurrent_activation} <= _ELEMENTWISE:
        return None  # a user's callable: jax.vjp of pointwise and mid
    rec_slopes, slopes = _slopes_of(recurrent_activation), _slopes_of(activation)

    def first(gx, hr, state, s, d_y, d_new):
        x_z, _, x_h = jnp.split(gx, 3, axis=-1)
        z, slope_z = rec_slopes(x_z + jnp.split(hr, 2, axis=-1)[0])
        n, slope_n = slopes(x_h + s)
        d_h = d_y + d_new.h
        d_n = d_h * (1.0 - z) * slope_n
        return d_n, (d_h * (state.h - n) * slope_z, d_n, d_h * z)

    def second(gx, hr, state, d_a, partial):
        d_z, d_n, d_h_z = partial
        r, slope_r = rec_slopes(jnp.split(gx, 3, axis=-1)[1] + jnp.split(hr, 2, axis=-1)[1])
        d_r = d_a * state.h * slope_r
        return (
            jnp.concatenate([d_z, d_r, d_n], axis=-1),
            jnp.concatenate([d_z, d_r], axis=-1),
            GRUState(d_h_z + d_a * r),
        )

    return first, second


def _gru_pack(gx, hr):
    """The reset-after GRU's step as ``(z and r sums, x_n, h_n)``: 4 units, against 6 for gx and hr.

    z and r see ``x @ W`` and ``h @ U`` only as a sum, so one copy of it serves both gradients.
    With tanh/sigmoid the forward saves these pieces instead of gx and hr (``_engine.Spec.pack``
    has the measurements); with other activations, see ``_on_gx_and_hr``.
    """
    units = hr.shape[-1] // 3
    return gx[..., : 2 * units] + hr[..., : 2 * units], gx[..., 2 * units :], hr[..., 2 * units :]


# The pieces' gradients as gx's and hr's: d_gx = [d_zr, d_xn], d_hr = [d_zr, d_hn].
_GRU_PARTS = ((0, 1), (0, 2))


def _on_gx_and_hr(vjp):
    """``_gru_vjp``'s ``vjp`` for gx and hr saved whole: packed in the step, gradients joined back.

    Saved packed, with slopes by jvp, XLA recomputed a cheap recurrent activation (hard_sigmoid)
    from the saved z and r sums inside the fusion that makes ``d_hn``, after the step's write of
    ``d_zr`` over them, and so copied the whole buffer of the sums twice a step: the hard_sigmoid
    GRU's fwd+bwd at (32, 128, 128, 256) took 84 ms packed, 69 saving gx and hr
    (bench/results/ab_fused.md; the test of those copies covers this cell). The one-tanh form
    computes ``r`` once, before the writes.
    """

    def unpacked(pieces, state, d_y, d_new):
        d_pieces, d_state = vjp(_gru_pack(*pieces), state, d_y, d_new)
        return tuple(jnp.concatenate([d_pieces[i] for i in part], axis=-1) for part in _GRU_PARTS), d_state

    return unpacked


def _gru_vjp(activation, recurrent_activation):
    """The reset-after GRU gate math's vjp for built-in activations (see ``_lstm_vjp``); else ``None``.

    On ``_gru_pack``'s pieces, their gradients out. With tanh/sigmoid: fwd+bwd -1.6% at (16, 64, 32,
    64) and -2.8% at (32, 128, 128, 256) over many shuffled rounds, unchanged at (64, 256, 256,
    512); within the noise in the recorded run (bench/results/ab_fused.md). Other built-in
    activations take their slopes by jvp (``_lstm_vjp_slopes``).
    """
    if not {activation, recurrent_activation} <= _ELEMENTWISE:
        return None  # a user's callable: jax.vjp of the gate math
    rec_slopes, slopes = _slopes_of(recurrent_activation), _slopes_of(activation)

    def vjp(pieces, state, d_y, d_new):
        zr_pre, x_n, h_n = pieces
        zr, slope_zr = rec_slopes(zr_pre)
        z, r = jnp.split(zr, 2, axis=-1)
        n, slope_n = slopes(x_n + r * h_n)
        d_h = d_y + d_new.h
        d_n = d_h * (1.0 - z) * slope_n
        d_zr = jnp.concatenate([d_h * (state.h - n), d_n * h_n], axis=-1) * slope_zr
        # Saved packed, the backward writes d_hn over h_n in place, and d_zr reads h_n: without the
        # order made explicit, XLA copied the whole h_n buffer every step (GRU fwd+bwd +13-38%).
        return (d_zr, d_n, _after(d_n * r, d_zr)), GRUState(d_h * z)

    return vjp


@functools.cache
def _spec(kind: str, activation, recurrent_activation, reset_after=True) -> Spec:
    """One Spec per cell math, cached so the custom_vjp's static arguments stay equal."""
    if kind == "lstm":
        gates = _lstm_gates(activation, recurrent_activation)

        def pointwise(gx, hr, state, _):
            i, f, c_hat, o = gates(gx + hr)
            c = f * state.c + i * c_hat
            h = o * activation(c)
            return h, LSTMState(h=h, c=c)

        return Spec(pointwise, _h, additive=True, pointwise_vjp=_lstm_vjp(activation, recurrent_activation))
    if kind == "gru" and not reset_after:  # hr is h @ U[:, :2u]; s is (r * h) @ U_h

        def mid(gx, hr, state):
            return recurrent_activation(jnp.split(gx, 3, axis=-1)[1] + jnp.split(hr, 2, axis=-1)[1]) * state.h

        def pointwise(gx, hr, state, s):
            x_z, _, x_h = jnp.split(gx, 3, axis=-1)
            z = recurrent_activation(x_z + jnp.split(hr, 2, axis=-1)[0])
            h = z * state.h + (1 - z) * activation(x_h + s)
            return h, GRUState(h)

        return Spec(pointwise, _h, mid, mid_vjps=_gru_reset_before_vjps(activation, recurrent_activation))
    if kind == "gru":

        def pointwise(gx, hr, state, _):
            x_z, x_r, x_h = jnp.split(gx, 3, axis=-1)
            h_z, h_r, h_h = jnp.split(hr, 3, axis=-1)
            z = recurrent_activation(x_z + h_z)
            r = recurrent_activation(x_r + h_r)
            h = z * state.h + (1 - z) * activation(x_h + r * h_h)
            return h, GRUState(h)

        vjp = _gru_vjp(activation, recurrent_activation)
        if vjp is None:  # jax.vjp of pointwise, on gx and hr saved whole
            return Spec(pointwise, _h)
        if _one_tanh(activation, recurrent_activation):
            return Spec(pointwise, _h, pointwise_vjp=vjp, pack=_gru_pack, parts=_GRU_PARTS)
        return Spec(pointwise, _h, pointwise_vjp=_on_gx_and_hr(vjp))

    def pointwise(gx, hr, state, _):
        h = activation(gx + hr)
        return h, SimpleRNNState(h)

    return Spec(pointwise, _h, additive=True)


def eligible(cell: Cell, *, constants=None, unroll=False, remat=False) -> tuple[bool, str]:
    """Whether ``cell`` can run fused with these arguments, and if not, why not."""
    config = cell.config
    if config is None:
        return False, "the cell is not a built-in SimpleRNN, GRU or LSTM cell (stacked and user cells run on the scan)"
    if config["kind"] not in ("lstm", "gru", "simple_rnn"):
        return False, f"there is no fused {config['kind']} kernel; it runs on the scan"
    if constants is not None:
        return False, "built-in cells take no constants"
    if unroll is True or (unroll is not False and unroll != 1):  # True == 1 in Python
        return False, f"unroll={unroll!r}: the fused path has its own loop"
    if remat:
        return False, "remat=True: the fused path keeps its own residuals; remat runs on the scan"
    return True, "eligible"


def run_fused(
    cell: Cell,
    params,
    state,
    xs: jax.Array,
    *,
    mask: jax.Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    zero_output_for_mask: bool = False,
    dropout: DropoutMasks | None = None,
    kernel: str = "auto",
    interpret: bool = False,
):
    """``jrnn.run(cell.step, ...)`` computed by the fused kernel: ``(ys, final_state)``.

    ``xs`` is ``(batch, time, features)`` (``(time, batch, features)`` with ``time_major``); the
    gate math and states are float32 whatever the input dtype (bf16 inputs: float32
    accumulation), and results come back in the input dtype.

    ``kernel`` picks the recurrence loops: ``'xla'`` (runs everywhere), ``'pallas'`` (persistent
    Mosaic GPU kernels forward and backward, NVIDIA Hopper only; their recurrent products have
    bf16 operands, see ``jrnn.kernels._pallas``) or ``'auto'`` (see ``choose_kernel``).
    ``interpret=True`` runs the Pallas kernels in the Mosaic GPU interpreter on any backend,
    slowly: for tests and debugging.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.cells.lstm(3)
      >>> params = cell.init_params(jax.random.key(0), 2)
      >>> xs = jax.random.normal(jax.random.key(1), (4, 6, 2))
      >>> ys, state = jrnn.kernels.run_fused(cell, params, cell.init_state((4,)), xs)
      >>> bool(jnp.allclose(ys, jrnn.run(cell.step, params, cell.init_state((4,)), xs)[0], atol=1e-6))
      True
    """
    ok, reason = eligible(cell)
    if not ok:
        raise ValueError(f"The fused path cannot run this cell: {reason}.")
    if kernel not in ("auto", "xla", "pallas"):
        raise ValueError(message("kernel", "'auto', 'xla' or 'pallas'", repr(kernel)))
    xs = jnp.asarray(xs)
    if xs.ndim != 3:
        layout = "(time, batch, features)" if time_major else "(batch, time, features)"
        raise ValueError(f"`xs` must be of rank 3, laid out {layout}. Received: xs.shape={xs.shape}")
    steps, step_shape = (xs.shape[0], xs.shape[1:]) if time_major else (xs.shape[1], xs.shape[::2])
    # The cell's own step validates params, state and input sizes, with its messages.
    jax.eval_shape(cell.step, params, state, jax.ShapeDtypeStruct(step_shape, xs.dtype))
    if mask is not None:
        mask = check_mask(mask, xs.shape[:2], "(time, batch)" if time_major else "(batch, time)")
        mask = mask if time_major else mask.T
    config = cell.config
    two_stage = config["kind"] == "gru" and not config["reset_after"]
    spec = _spec(config["kind"], config["activation"], config.get("recurrent_activation"), not two_stage)
    if "to_plain" in config:  # the CuDNN cells: their weights as the plain cell's
        params = config["to_plain"](params)
    w_in, rec_kernel = params.kernel.astype(xs.dtype), params.recurrent_kernel.astype(xs.dtype)
    b_in, b_rec = params.bias, None
    if config["kind"] == "gru" and config["reset_after"] and params.bias is not None:
        b_in, b_rec = params.bias[0], params.bias[1]
    d = dropout if dropout is not None else DropoutMasks(None, None)
    rec, rec2 = d.recurrent, None
    if two_stage:  # U = [U_z | U_r] for h, then U_h for r * h, each with its own dropout mask
        units = rec_kernel.shape[0]
        wt = Weights(w_in, rec_kernel[:, : 2 * units], rec_kernel[:, 2 * units :], b_in, b_rec)
        if rec is not None:
            rec, rec2 = (rec[:2], rec[2:]) if rec.shape[0] == 3 else (rec, rec)
    else:
        wt = Weights(w_in, rec_kernel, None, b_in, b_rec)
    drop = Dropout(d.inputs, rec, rec2)
    use_pallas, reason = choose_kernel(cell, rec_kernel.shape[0], kernel, dropout=dropout, interpret=interpret)
    if kernel == "pallas" and not use_pallas:
        raise ValueError(f"kernel='pallas' cannot run here: {reason}.")
    if use_pallas and steps > 0:  # the Pallas kernels are time-major
        act, rec_act = config["activation"], config["recurrent_activation"]
        static = _Static(config["kind"], act, rec_act, bool(reverse), bool(zero_output_for_mask), interpret)
        ys_t, final = pallas_fused(static, wt, _swap(xs, not time_major), state, mask, drop)
        ys = _swap(ys_t, not time_major)
    else:  # in the caller's layout: the loop reads and writes batch-major blocks itself
        ys, final = fused(spec, bool(reverse), bool(zero_output_for_mask), not time_major, wt, xs, state, mask, drop)
    return ys.astype(xs.dtype), jax.tree.map(lambda a: a.astype(xs.dtype), final)


# GPUs (compute capability) where bench/gpu.py measured the Pallas kernel at least as fast as the
# XLA fused loop. None yet: no session has had a GPU since the kernel was written.
_PALLAS_MEASURED_FASTER: frozenset[str] = frozenset()


def _device_capability() -> str | None:
    """The default device's CUDA compute capability (``'9.0'``), or ``None`` off NVIDIA GPUs."""
    device = jax.devices()[0]
    return getattr(device, "compute_capability", None) if device.platform == "gpu" else None


def _hopper(capability: str | None) -> bool:
    """Whether a compute capability is Hopper's (9.x): wgmma, which the kernels use, is sm_90's alone."""
    return capability is not None and capability.split(".")[0] == "9"


def choose_kernel(cell: Cell, units: int, kernel="auto", *, dropout=None, interpret=False) -> tuple[bool, str]:
    """Whether the fused path's loop is the Pallas kernel (``True``) or XLA's, and why; never raises.

    ``kernel='pallas'`` asks for it (the answer says why not where it cannot run), ``'xla'``
    declines it, and ``'auto'`` takes it where it was measured faster: on no GPU yet.
    """
    if kernel == "xla":
        return False, "kernel='xla'"
    if kernel not in ("auto", "pallas"):
        return False, f"kernel must be 'auto', 'xla' or 'pallas', not {kernel!r}"
    rec_masks = 0 if dropout is None or dropout.recurrent is None else dropout.recurrent.shape[0]
    ok, reason = pallas_eligible(cell.config, units, recurrent_dropout=rec_masks)
    if not ok:
        return False, reason
    if not interpret:
        capability = _device_capability()
        if not _hopper(capability):
            kind = jax.devices()[0].device_kind
            return False, f"the Pallas kernel needs an NVIDIA Hopper GPU (sm_90); the device is {kind}"
        if kernel == "auto" and capability not in _PALLAS_MEASURED_FASTER:
            return False, f"auto: the Pallas kernel is not measured against the XLA loop on sm_{capability}"
    elif kernel == "auto":
        return False, "auto: interpret=True runs the Pallas kernel only when asked for (kernel='pallas')"
    elif uses_cluster(units) and not interpreter_runs_clusters():
        return False, (
            f"hidden size {units} runs on a thread-block cluster, which the Mosaic GPU interpreter of "
            f"JAX {jax.__version__} cannot run (JAX 0.11 can)"
        )
    return True, "pallas"


# Backends where bench/cpu.py measured the fused path at least as fast as the scan.
_MEASURED_FASTER = frozenset({"cpu"})


def choose(cell: Cell, use_fused="auto", *, constants=None, unroll=False, remat=False) -> tuple[bool, str]:
    """The path for ``use_fused`` ('auto', True or False): ``(fused, reason)``; never raises.

    'auto' takes the fused path where it was measured at least as fast as the scan: on the CPU
    (bench/results/cpu.md at three sizes; bench/results/dispatch.md over a grid of others and every
    fused kind, where the scan still wins with very small layers, 8 units at batch 128, and in
    some batch-1 forwards of 16-64 units). No GPU or TPU measurement exists yet, so there 'auto'
    runs the scan, except for the CuDNN cells, which always run fused.
    """
    if use_fused is False:
        return False, "use_fused=False"
    ok, reason = eligible(cell, constants=constants, unroll=unroll, remat=remat)
    if use_fused is True:
        return ok, reason
    if use_fused != "auto":
        return False, f"use_fused must be 'auto', True or False, not {use_fused!r}"
    if not ok:
        return False, reason
    if cell.config.get("fused_only"):
        return True, "auto: the CuDNN cells run on the fused path"
    backend = jax.default_backend()
    if backend in _MEASURED_FASTER:
        return True, f"auto: the fused path is the faster one on {backend}"
    return False, f"auto: the fused path is not measured against the scan on {backend}"

"""Fused kernels against their reference, jrnn.run(cell.step, ...): values and gradients."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import count_compiles, make_mask

import jrnn
from jrnn.kernels import _engine


def _own_tanh(x):  # a user's activation: the fused path cannot know it acts element by element
    return jnp.tanh(x)


CELLS = {
    "lstm": lambda u: jrnn.cells.lstm(u, recurrent_activation="sigmoid"),
    "lstm_keras2": lambda u: jrnn.cells.lstm(u),  # hard_sigmoid: a kink the gradients must respect
    "lstm_callable": lambda u: jrnn.cells.lstm(u, activation=_own_tanh),  # jax.vjp of the gate math
    "gru": lambda u: jrnn.cells.gru(u, reset_after=True, activation="relu"),
    "gru_callable": lambda u: jrnn.cells.gru(u, reset_after=True, activation=_own_tanh),  # jax.vjp
    "gru_reset_before": lambda u: jrnn.cells.gru(u),  # Keras 2 defaults: hard_sigmoid, (r * h) @ U_h
    # tanh/sigmoid: the closed-form gate gradients on the packed residuals (_fused._gru_pack)
    "gru_closed_form": lambda u: jrnn.cells.gru(u, reset_after=True, recurrent_activation="sigmoid"),
    "simple_rnn": lambda u: jrnn.cells.simple_rnn(u),
}
SIZES = [(1, 1, 1, 1), (3, 7, 5, 6)]  # (batch, time, n_in, units)
# Pre-activations on the built-in activations' kinks: hard_sigmoid_keras3 (+-3), hard_sigmoid (+-2.5), relu (0).
_KINKS = np.array([-3.0, -2.5, 0.0, 2.5, 3.0], np.float32)


def _setup(kind, size, seed=0):
    batch, steps, n_in, units = size
    cell = CELLS[kind](units)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = jax.tree.map(lambda a: 0.3 * jax.random.normal(keys[0], a.shape), cell.init_params(keys[1], n_in))
    state = jax.tree.map(lambda a: 0.5 * jax.random.normal(keys[2], a.shape), cell.init_state((batch,)))
    xs = jax.random.normal(keys[3], (batch, steps, n_in))
    return cell, params, state, xs


def _loss(fn):
    return lambda p, s, xs: sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(fn(p, s, xs)))


def _compare(cell, params, state, xs, rtol=2e-5, atol=2e-5, dropout=None, **kwargs):
    step = cell.step if dropout is None else partial(cell.step, dropout=dropout)
    ref = lambda p, s, xs: jrnn.run(step, p, s, xs, **kwargs)  # noqa: E731
    got = lambda p, s, xs: jrnn.kernels.run_fused(cell, p, s, xs, dropout=dropout, **kwargs)  # noqa: E731
    close = partial(np.testing.assert_allclose, rtol=rtol, atol=atol)
    (values, grads), (values_ref, grads_ref) = (_values_and_grads(f)(params, state, xs) for f in (got, ref))
    jax.tree.map(close, values, values_ref)
    jax.tree.map(close, grads, grads_ref)


def _values_and_grads(fn):
    """``fn``'s outputs and ``_loss``'s gradients, as one compiled program: run op by op, the
    custom_vjp's forward and backward compiled each operation apart (half of this file's time)."""
    return jax.jit(lambda p, s, xs: (fn(p, s, xs), jax.grad(_loss(fn), (0, 1, 2))(p, s, xs)))


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize(  # every mask pattern, and both directions, at half the compilations
    "pattern, reverse", [(None, False), ("right", True), ("left", False), ("holes", True)]
)
def test_fused_matches_the_scan(kind, size, pattern, reverse):
    cell, params, state, xs = _setup(kind, size)
    mask = make_mask(pattern, *xs.shape[:2])
    _compare(cell, params, state, xs, mask=None if mask is None else jnp.asarray(mask), reverse=reverse)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("time_major", [False, True])
def test_whole_blocks_and_a_remainder_in_either_layout(kind, time_major):
    """T = 19: two 8-step blocks and a remainder of 3, read from and written to either layout."""
    cell, params, state, xs = _setup(kind, (2, 19, 3, 4))
    mask = jnp.asarray(make_mask("holes", 2, 19))
    if time_major:
        xs, mask = jnp.swapaxes(xs, 0, 1), mask.T
    for reverse in (False, True):
        _compare(cell, params, state, xs, mask=mask, reverse=reverse, time_major=time_major)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zero_output_time_major_and_no_bias(kind):
    cell = {  # the GRU with tanh/sigmoid: its closed-form gate gradients (_fused._gru_vjp) with masks
        "lstm": jrnn.cells.lstm(4, use_bias=False),
        "gru": jrnn.cells.gru(4, reset_after=True, use_bias=False, recurrent_activation="sigmoid"),
    }[kind]
    params = jax.tree.map(
        lambda a: 0.3 * jax.random.normal(jax.random.key(0), a.shape), cell.init_params(jax.random.key(1), 3)
    )
    state = cell.init_state((3,))
    xs = jax.random.normal(jax.random.key(2), (7, 3, 3))  # time-major
    mask = jnp.asarray(make_mask("holes", 3, 7)).T
    _compare(cell, params, state, xs, mask=mask, time_major=True, zero_output_for_mask=True)


@pytest.mark.parametrize("pattern, reverse, lanes", [("holes", True, False), ("right", False, True)])
def test_gru_packed_residuals_match_the_scan(pattern, reverse, lanes, request):
    """Saved as ``_fused._gru_pack``'s pieces (4 units a step, not 6), in one lane or two."""
    if lanes:
        request.getfixturevalue("two_lanes")
    cell, params, state, xs = _setup("gru_closed_form", (5, 11, 3, 4))
    spec = jrnn.kernels._fused._spec("gru", jrnn.activations.tanh, jrnn.activations.sigmoid, True)
    wt = _engine.Weights(params.kernel, params.recurrent_kernel, None, params.bias[0], params.bias[1])
    no_drop = _engine.Dropout(None, None, None)
    residuals = jax.eval_shape(
        lambda *a: _engine._forward(spec, False, False, *a)[2], wt, jnp.swapaxes(xs, 0, 1), state, None, no_drop
    )
    assert [sum(p.shape[-1] for p in lane[0]) for lane in residuals] == [4 * 4] * (2 if lanes else 1)
    mask = make_mask(pattern, *xs.shape[:2])
    _compare(cell, params, state, xs, mask=None if mask is None else jnp.asarray(mask), reverse=reverse)


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("kind", ["lstm", "gru_closed_form", "gru_reset_before"])
def test_dropout_masks_enter_the_kernel(implementation, kind):
    """Masks of one per gate (implementation 1) are cut to the packed residuals' column blocks."""
    factory = {  # tanh/sigmoid: the closed-form gate gradients (_fused._lstm_vjp, _gru_vjp) under dropout
        "lstm": partial(jrnn.cells.lstm, recurrent_activation="sigmoid"),
        "gru_closed_form": partial(jrnn.cells.gru, reset_after=True, recurrent_activation="sigmoid"),
        "gru_reset_before": jrnn.cells.gru,
    }[kind]
    cell = factory(5, dropout=0.3, recurrent_dropout=0.4, implementation=implementation)
    _, params, state, xs = _setup(kind, (3, 6, 4, 5))
    masks = cell.dropout_masks(jax.random.key(9), params, (3,))
    _compare(cell, params, state, xs, dropout=masks, mask=jnp.asarray(make_mask("right", 3, 6)))


@pytest.fixture
def two_lanes(monkeypatch):
    """The loops run as two lanes of batch rows (``_engine._lanes``) at any size, as on 2+ CPU cores."""
    monkeypatch.setattr(_engine, "_LANE_MIN_MACS", 0)
    monkeypatch.setattr(_engine, "_cores", lambda: 2)
    wt = _engine.Weights(None, jnp.zeros((4, 16)), None, None, None)
    assert _engine._lanes(5, wt) == [(0, 3), (3, 5)]
    jax.clear_caches()  # the kernel's own jit would reuse a one-lane trace of the same shapes
    yield
    jax.clear_caches()  # and no two-lane trace outlives the test


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_two_lanes_match_the_scan(kind, two_lanes):
    """Lanes of 3 and 2 rows, each with its own mask holes, over an 8-step block and a remainder."""
    cell, params, state, xs = _setup(kind, (5, 11, 3, 4))
    mask = jnp.asarray(make_mask("holes", 5, 11))
    _compare(cell, params, state, xs, mask=mask, reverse=kind.startswith("gru"))


def test_two_lanes_split_dropout_masks_and_time_major_zero_output(two_lanes):
    cell = jrnn.cells.lstm(5, dropout=0.3, recurrent_dropout=0.4, implementation=2, recurrent_activation="sigmoid")
    _, params, state, xs = _setup("lstm", (3, 6, 4, 5))
    masks = cell.dropout_masks(jax.random.key(9), params, (3,))  # one per gate: split by lane too
    mask = jnp.asarray(make_mask("right", 3, 6)).T
    _compare(
        cell,
        params,
        state,
        jnp.swapaxes(xs, 0, 1),
        dropout=masks,
        mask=mask,
        time_major=True,
        zero_output_for_mask=True,
    )


@pytest.mark.parametrize(
    "activation, recurrent_activation",
    [
        *((a, r) for a in ("tanh", "sigmoid") for r in ("tanh", "sigmoid")),  # one tanh over all gates
        ("tanh", "hard_sigmoid"),  # jrnn's default; the rest: slopes by jvp (_lstm_vjp_slopes)
        ("relu", "hard_sigmoid_keras3"),
        ("softsign", "sigmoid"),
        ("elu", "softplus"),
        ("selu", "linear"),
        ("exponential", "tanh"),
    ],
)
def test_lstm_closed_form_gate_gradients_match_jax_vjp(activation, recurrent_activation):
    """The LSTM's closed-form gate vjp against jax.vjp of its gate math, kinks included: the
    pre-activations hit hard_sigmoid's (+-2.5), hard_sigmoid_keras3's (+-3) and relu's (0) exactly."""
    from jrnn.kernels._fused import _spec

    act, ract = jrnn.activations.get(activation), jrnn.activations.get(recurrent_activation)
    spec = _spec("lstm", act, ract)
    assert spec.pointwise_vjp is not None  # else this would test nothing
    keys = jax.random.split(jax.random.key(3), 5)
    pre = 3.0 * jax.random.normal(keys[0], (4, 4 * 5))  # into the saturated range too
    pre = pre.at[0].set(jnp.tile(_KINKS, 4)).at[1, :5].set(_KINKS)
    state = jrnn.cells.LSTMState(*(jax.random.normal(k, (4, 5)) for k in keys[1:3]))
    d_y, d_c = (jax.random.normal(k, (4, 5)) for k in keys[3:])
    d_new = jrnn.cells.LSTMState(h=d_y[::-1], c=d_c)
    _, vjp = jax.vjp(lambda z, st: spec.pointwise(z, 0.0, st, None), pre, state)
    d_pre, d_state = vjp((d_y, d_new))
    want = ((d_pre,), d_state)
    got = spec.pointwise_vjp(spec.pieces(pre, 0.0), state, d_y, d_new)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)
    assert _spec("lstm", act, _own_tanh).pointwise_vjp is None  # a user's callable: jax.vjp


@pytest.mark.parametrize(
    "activation, recurrent_activation",
    [
        *((a, r) for a in ("tanh", "sigmoid") for r in ("tanh", "sigmoid")),  # one tanh for values and slopes
        ("tanh", "hard_sigmoid"),  # slopes by jvp
        ("relu", "hard_sigmoid_keras3"),
        ("softsign", "softplus"),
    ],
)
def test_gru_closed_form_gate_gradients_match_jax_vjp(activation, recurrent_activation):
    """The reset-after GRU's closed-form gate vjp against jax.vjp of its gate math, through what the
    forward saves (with tanh/sigmoid ``_gru_pack``'s pieces, z and r as sums; else gx and hr) and
    back to gx's and hr's gradients; row 0 of the pre-activations on the activations' kinks."""
    from jrnn.kernels._fused import _one_tanh, _spec

    act, ract = jrnn.activations.get(activation), jrnn.activations.get(recurrent_activation)
    spec = _spec("gru", act, ract, True)
    assert spec.pointwise_vjp is not None  # else this would test nothing
    keys = jax.random.split(jax.random.key(4), 4)
    gx, hr = (3.0 * jax.random.normal(k, (4, 3 * 5)) for k in keys[:2])  # into the saturated range too
    gx, hr = gx.at[0].set(jnp.tile(_KINKS, 3)), hr.at[0].set(0.0)
    state = jrnn.cells.GRUState(jax.random.normal(keys[2], (4, 5)))
    d_y, d_h = jax.random.normal(keys[3], (2, 4, 5))
    _, vjp = jax.vjp(lambda g, h, st: spec.pointwise(g, h, st, None), gx, hr, state)
    d_gx, d_hr, d_state = vjp((d_y, jrnn.cells.GRUState(d_h)))
    d_pieces, got_state = spec.pointwise_vjp(spec.pieces(gx, hr), state, d_y, jrnn.cells.GRUState(d_h))
    packed = _one_tanh(act, ract)  # the one-tanh form saves the packed pieces
    assert (spec.pack is not None) == packed
    assert sum(p.shape[-1] for p in d_pieces) == (4 if packed else 6) * 5  # packed: 4 units a step, not 6
    got = tuple(jnp.concatenate(parts, axis=-1) for parts in spec.grad_parts(d_pieces))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), (got, got_state), ((d_gx, d_hr), d_state)
    )
    assert _spec("gru", act, _own_tanh, True).pointwise_vjp is None  # a user's callable: jax.vjp


@pytest.mark.parametrize(
    "activation, recurrent_activation",
    [("tanh", "hard_sigmoid"), ("tanh", "sigmoid"), ("relu", "hard_sigmoid_keras3"), ("softsign", "linear")],
)
def test_gru_reset_before_closed_form_gate_gradients_match_jax_vjp(activation, recurrent_activation):
    """The reset-before GRU's two-stage gate vjp (``Spec.mid_vjps``) against jax.vjp of its gate
    math through ``s = (r * h) @ U_h``, kinks included (hard_sigmoid's +-2.5, relu's 0, ...)."""
    from jrnn.kernels._fused import _spec

    act, ract = jrnn.activations.get(activation), jrnn.activations.get(recurrent_activation)
    spec = _spec("gru", act, ract, False)
    assert spec.mid_vjps is not None  # else this would test nothing
    keys = jax.random.split(jax.random.key(5), 6)
    gx = (3.0 * jax.random.normal(keys[0], (4, 3 * 5))).at[0].set(jnp.tile(_KINKS, 3))
    hr = (3.0 * jax.random.normal(keys[1], (4, 2 * 5))).at[0].set(0.0)  # row 0: the kinks themselves
    state = jrnn.cells.GRUState(jax.random.normal(keys[2], (4, 5)))
    u_h = jax.random.normal(keys[3], (5, 5))
    d_y, d_h = jax.random.normal(keys[4], (2, 4, 5))

    def gate_math(gx, hr, state):
        s = spec.mid(gx, hr, state) @ u_h
        return spec.pointwise(gx, hr, state, s)

    _, vjp = jax.vjp(gate_math, gx, hr, state)
    want = vjp((d_y, jrnn.cells.GRUState(d_h)))
    first, second = spec.mid_vjps
    s = spec.mid(gx, hr, state) @ u_h
    d_s, partial = first(gx, hr, state, s, d_y, jrnn.cells.GRUState(d_h))
    got = second(gx, hr, state, d_s @ u_h.T, partial)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
    assert _spec("gru", act, _own_tanh, False).mid_vjps is None  # a user's callable: jax.vjp


def test_vmap_and_jit_through_the_kernel():
    cell, params, state, xs = _setup("gru", (3, 5, 4, 6))
    one = lambda s, x: jrnn.kernels.run_fused(cell, params, jax.tree.map(lambda a: a[None], s), x[None])  # noqa: E731
    batched = jax.jit(jax.vmap(one))(state, xs)
    ref = jrnn.kernels.run_fused(cell, params, state, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[:, 0], b, rtol=1e-6, atol=1e-6), batched, ref)


@pytest.mark.parametrize("kernel", ["xla", "pallas"])
def test_a_repeated_eager_call_compiles_nothing(kernel):
    """A notebook cell run again: the kernels' loops are cached per shape, not rebuilt per call."""
    cell, params, state, xs = _setup("lstm", (2, 3, 2, 4))
    call = partial(jrnn.kernels.run_fused, cell, params, state, xs, kernel=kernel, interpret=kernel == "pallas")
    call()
    with count_compiles() as compiled:
        call()
    assert not compiled


def test_bf16_inputs_accumulate_in_float32():
    cell, params, state, xs = _setup("lstm", (4, 20, 8, 16))
    ys16, final16 = jrnn.kernels.run_fused(cell, params, state, xs.astype(jnp.bfloat16))
    ys32, _ = jrnn.kernels.run_fused(cell, params, state, xs)
    assert ys16.dtype == jnp.bfloat16 and final16.c.dtype == jnp.bfloat16
    np.testing.assert_allclose(ys16.astype(jnp.float32), ys32, atol=0.03)


def test_zero_length_sequence():
    cell, params, state, xs = _setup("lstm", (3, 7, 5, 6))
    ys, final = jrnn.kernels.run_fused(cell, params, state, xs[:, :0])
    assert ys.shape == (3, 0, 6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b), final, state)


def test_forward_mode_gives_a_clear_error():
    cell, params, state, xs = _setup("lstm", (2, 3, 2, 2))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: jrnn.kernels.run_fused(cell, params, state, x)[0], (xs,), (xs,))


def test_eligibility_reasons():
    assert jrnn.kernels.eligible(jrnn.cells.lstm(3)) == (True, "eligible")
    assert jrnn.kernels.eligible(jrnn.cells.gru(3, reset_after=False)) == (True, "eligible")
    ok, reason = jrnn.kernels.eligible(jrnn.cells.stacked([jrnn.cells.lstm(3)]))
    assert not ok and "stacked" in reason
    ok, reason = jrnn.kernels.eligible(jrnn.cells.conv_lstm(3, 2, rank=1))
    assert not ok and "no fused conv_lstm kernel" in reason
    with pytest.raises(ValueError, match="The fused path cannot run this cell: the cell is not a built-in"):
        cell = jrnn.cells.stacked([jrnn.cells.lstm(3)])
        jrnn.kernels.run_fused(cell, cell.init_params(jax.random.key(0), 2), cell.init_state((1,)), jnp.ones((1, 2, 2)))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_layers_dispatch_gives_the_same_results(go_backwards):
    cell, params, state, xs = _setup("lstm", (3, 7, 5, 6))
    cell = jrnn.cells.lstm(6, recurrent_activation="sigmoid", dropout=0.2, recurrent_dropout=0.3)
    mask = jnp.asarray(make_mask("holes", 3, 7))
    key = jax.random.key(4)

    def out(use_fused):
        def f(p, s, xs):
            result = jrnn.layers.rnn(
                cell,
                p,
                xs,
                initial_state=s,
                mask=mask,
                return_sequences=True,
                go_backwards=go_backwards,
                training=True,
                dropout_key=key,
                use_fused=use_fused,
            )
            return result.output, result.state

        return f

    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5),
        out(True)(params, state, xs),
        out(False)(params, state, xs),
    )
    g_fused = jax.grad(_loss(out(True)), (0, 1, 2))(params, state, xs)
    g_scan = jax.grad(_loss(out(False)), (0, 1, 2))(params, state, xs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5), g_fused, g_scan)


def test_use_fused_true_on_an_ineligible_configuration_says_why():
    cell = jrnn.cells.stacked([jrnn.cells.gru(4)])
    params = cell.init_params(jax.random.key(0), 3)
    expected = r"`use_fused` must be False or 'auto' for this configuration. Received: True, but the cell is not"
    with pytest.raises(ValueError, match=expected):
        jrnn.layers.rnn(cell, params, jnp.ones((2, 5, 3)), use_fused=True)
    with pytest.raises(ValueError, match=r"`use_fused` must be False or 'auto'.*unroll=True"):
        jrnn.layers.rnn(
            jrnn.cells.lstm(4),
            jrnn.cells.lstm(4).init_params(jax.random.key(0), 3),
            jnp.ones((2, 5, 3)),
            unroll=True,
            use_cudnn=True,
        )
    assert jrnn.kernels.choose(jrnn.cells.lstm(4), "auto") == (True, "auto: the fused path is the faster one on cpu")
    ok, reason = jrnn.kernels.choose(jrnn.cells.lstm(4), "auto", unroll=True)
    assert not ok and "unroll=True" in reason
    lstm = jrnn.cells.lstm(4)
    with pytest.raises(ValueError, match=r"Received: True, but remat=True: the fused path keeps its own residuals"):
        jrnn.layers.rnn(lstm, lstm.init_params(jax.random.key(0), 3), jnp.ones((2, 5, 3)), remat=True, use_fused=True)
    assert jrnn.kernels.choose(lstm, "auto", remat=True)[0] is False  # 'auto' with remat: the scan


def test_wrappers_pass_use_fused():
    from flax import nnx

    x = jax.random.normal(jax.random.key(0), (3, 6, 4))
    fused = jrnn.nnx.GRU(5, input_dim=4, reset_after=True, use_cudnn=True, return_sequences=True, rngs=nnx.Rngs(0))
    scan = jrnn.nnx.GRU(5, input_dim=4, reset_after=True, use_fused=False, return_sequences=True, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(fused(x), scan(x), rtol=2e-5, atol=2e-5)
    module = jrnn.linen.LSTM(5, use_fused=True, go_backwards=True)
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_allclose(
        module.apply(variables, x),
        jrnn.linen.LSTM(5, use_fused=False, go_backwards=True).apply(variables, x),
        rtol=2e-5,
        atol=2e-5,
    )


def _copied_step_buffers(kind):
    """Widths of the ``(time, batch, k)`` arrays that the compiled fwd+bwd program copies, other
    than the input's (``k == n_in``: the weight gradients' transposed input, made once)."""
    batch, steps, n_in, units = 5, 11, 3, 7
    cell, params, state, xs = _setup(kind, (batch, steps, n_in, units))
    mask = make_mask("holes", batch, steps)

    def loss(p, x):
        return jnp.sum(jrnn.kernels.run_fused(cell, p, state, x, mask=mask, reverse=True)[0] ** 2)

    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(params, xs).compile().as_text()
    shapes = re.findall(r"= f32\[(\d+),(\d+),(\d+)\]\{[^}]*\} copy\(", hlo)
    return sorted(int(k) for t, b, k in shapes if (int(t), int(b)) == (steps, batch) and int(k) != n_in)


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_the_backward_overwrites_its_saved_steps_in_place(kind, lanes, request):
    """``_engine._write_last``: every cell's backward overwrites each step's saved pre-activations
    with their gradients without copying the whole buffer first. Without the ordering, XLA copied it
    every step for the cells whose gate gradients come from ``jax.vjp`` (the reset-before GRU's
    fwd+bwd 2.4-3.7x as long, bench/results/ab_fused.md) and for some closed forms (the relu GRU;
    and the hard_sigmoid reset-after GRU, packed: ``_fused._on_gx_and_hr``). Two lanes (``_holding``)
    are a different loop body."""
    if lanes == 2:
        request.getfixturevalue("two_lanes")
    assert _copied_step_buffers(kind) == []


def test_unordered_writes_copy_the_saved_steps(monkeypatch):
    """The check above can fail: with the writes left unordered, XLA copies the buffers."""

    def unordered(bufs, d_pieces, t, waits_for):
        return tuple(jax.lax.dynamic_update_index_in_dim(b, d, t, 0) for b, d in zip(bufs, d_pieces, strict=True))

    monkeypatch.setattr(_engine, "_write_last", unordered)
    jax.clear_caches()  # the kernel's own jit would reuse its trace with _write_last
    try:
        assert _copied_step_buffers("gru_reset_before") != []
    finally:
        jax.clear_caches()


def test_the_weight_gradients_input_copies_wait_for_the_backward_loop(monkeypatch):
    """``_engine._after``: the transposed input copies for the weight gradients are made after the
    loops, not held through them. At (32, 128, 128, 256) that took the LSTM's fwd+bwd temporary
    buffer from 32.4 MiB to 30.4, under glibc's 32 MiB threshold for mapping it afresh each call."""
    cell = jrnn.cells.lstm(256, recurrent_activation="sigmoid")
    params = cell.init_params(jax.random.key(0), 128)
    xs = jnp.zeros((32, 128, 128))

    def temp_mib():
        loss = lambda p, x: jnp.sum(jrnn.kernels.run_fused(cell, p, cell.init_state((32,)), x)[0] ** 2)  # noqa: E731
        stats = jax.jit(jax.grad(loss, (0, 1))).lower(params, xs).compile().memory_analysis()
        return stats.temp_size_in_bytes / 2**20

    ordered = temp_mib()
    monkeypatch.setattr(_engine, "_after", lambda a, b: a)
    jax.clear_caches()  # the kernel's own jit would reuse its trace with _after
    try:
        unordered = temp_mib()
    finally:
        jax.clear_caches()  # and no trace of the patched kernel outlives this test
    assert ordered < 32 and ordered + 1.5 < unordered, (ordered, unordered)


# The backward loop's two lanes at (32, 128, 128, 256), compiled in a subprocess with XLA's
# executor log on (C++ logging reads its settings when the process starts): each ``thunk`` line
# names an operation and the operations it waits for, read from the buffers they share.
_LANE_PRODUCTS = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, jrnn
    from jrnn.kernels import _engine
    _engine._cores = lambda: 2
    if {unheld}:
        _engine._holding = lambda d_h, d_state: d_h
    cell = jrnn.cells.gru(256, reset_after=True, recurrent_activation="sigmoid")
    params = cell.init_params(jax.random.key(0), 128)
    state = cell.init_state((32,))
    xs = jnp.zeros((32, 128, 128))
    loss = lambda p, x: jnp.sum(jrnn.kernels.run_fused(cell, p, state, x)[0] ** 2)
    jax.jit(jax.grad(loss, (0, 1))).lower(params, xs).compile()
    """
)


def _backward_products_waits(unheld=False):
    """For the backward loop's per-step products (the executor whose only matmuls are two), the
    other products each waits for."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "thunk_executor=6", "JAX_PLATFORMS": "cpu"}
    script = _LANE_PRODUCTS.format(unheld=unheld)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for graph in done.stderr.split("Constructed ThunkExecutor"):
        products = re.findall(r"op_name=(\S+), kind=ynn-fusion, dependencies=\[([^\]]*)\]", graph)
        if len(products) == 2 and "update-slice" in graph:
            names = {name for name, _ in products}
            return {name: names & set(deps.split(", ")) for name, deps in products}
    raise AssertionError("no executor graph with the backward loop's two products in XLA's log")


def test_the_backward_lanes_products_do_not_wait_for_each_other():
    """The reset-after GRU's lanes ran their step products one after the other (_engine._holding)."""
    assert all(not waits for waits in _backward_products_waits().values())


def test_without_holding_one_lanes_product_waits_for_the_others():
    """The check above can fail: without ``_holding`` one product waits for the other's bytes."""
    assert any(_backward_products_waits(unheld=True).values())

"""jrnn.cells + jrnn.run against keras.layers.SimpleRNN/GRU/LSTM (Keras 3, JAX backend).

Weights are copied from random gate-distinct arrays; outputs, final states and the gradients with
respect to inputs, weights and initial state are compared at float32 tolerance 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import KINDS, make_cell, make_mask, params_from, random_state, random_weights, relaxed_numerics, to_state

import jrnn

keras = pytest.importorskip("keras")

B, T, N_IN, UNITS = 3, 7, 5, 4

# Each case turns on several options at once: few compilations, many assertions.
CASES = {
    "plain": dict(),
    "right_mask_backwards_impl1": dict(mask="right", go_backwards=True, implementation=1),
    "left_mask_initial_state": dict(mask="left", initial_state=True),
    "holes_empty_row_no_bias": dict(mask="holes", initial_state=True, use_bias=False),
    "relu_keras3_hard_sigmoid_backwards": dict(
        activation="relu", recurrent_activation="hard_sigmoid", go_backwards=True, mask="holes"
    ),
    "linear_last_output_impl1": dict(
        activation=None, implementation=1, initial_state=True, return_sequences=False, mask="right"
    ),
}

# jrnn keeps the Keras-2 name for Keras 2's function; Keras 3's 'hard_sigmoid' is another one.
KERAS3_TO_JRNN_ACTIVATION = {"hard_sigmoid": "hard_sigmoid_keras3"}


def _keras_layer(kind, case, unroll):
    options = dict(
        activation=case.get("activation", "tanh"),
        use_bias=case.get("use_bias", True),
        return_sequences=case.get("return_sequences", True),
        return_state=True,
        go_backwards=case.get("go_backwards", False),
        unroll=unroll,
    )
    if kind == "simple_rnn":
        return keras.layers.SimpleRNN(UNITS, **options)
    options["recurrent_activation"] = case.get("recurrent_activation", "sigmoid")
    if kind == "lstm":
        return keras.layers.LSTM(UNITS, implementation=case.get("implementation", 2), **options)
    return keras.layers.GRU(UNITS, reset_after=kind == "gru_reset_after", **options)


def _keras_outputs(kind, case, weights, x, mask, init):
    # Keras' scan path repeats the initial state (not zeros) at leading masked steps; its
    # unrolled path follows the documented rule that jrnn implements everywhere.
    unroll = init is not None and mask is not None
    with relaxed_numerics():
        layer = _keras_layer(kind, case, unroll)
        layer.build((B, T, N_IN))
        layer.set_weights(weights)

        frozen = [v.value for v in layer.non_trainable_variables]  # the dropout seed generator

        def outputs(w, x, init):
            out, _ = layer.stateless_call(w, frozen, x, mask=mask, initial_state=init)
            return out

        return outputs, [v.value for v in layer.trainable_variables]


def _jrnn_outputs(kind, case):
    rec = case.get("recurrent_activation", "sigmoid")
    cell = make_cell(
        kind,
        UNITS,
        activation=case.get("activation", "tanh"),
        recurrent_activation=KERAS3_TO_JRNN_ACTIVATION.get(rec, rec),
        implementation=case.get("implementation", 2),
        use_bias=case.get("use_bias", True),
    )
    backwards = case.get("go_backwards", False)

    def outputs(params, x, init, mask):
        state = init if init is not None else cell.init_state((B,))
        ys, final = jrnn.run(cell.step, params, state, x, mask=mask, reverse=backwards)
        if backwards:  # Keras returns go_backwards sequences in processing order
            ys = jnp.flip(ys, axis=1)
        y = ys if case.get("return_sequences", True) else ys[:, -1]
        return [y, *final]

    return outputs


def _loss(outputs, cotangents):
    return sum(jnp.sum(o * c) for o, c in zip(outputs, cotangents, strict=True))


@pytest.mark.parametrize("case_name", sorted(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_matches_keras(kind, case_name):
    case = CASES[case_name]
    rng = np.random.default_rng(3)
    weights = random_weights(kind, N_IN, UNITS, use_bias=case.get("use_bias", True))
    x = rng.normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask(case.get("mask"), B, T)
    init = random_state(kind, B, UNITS) if case.get("initial_state") else None

    keras_fn, keras_w = _keras_outputs(kind, case, weights, x, mask, init)
    jrnn_fn = _jrnn_outputs(kind, case)
    params = params_from(kind, weights)
    j_init = to_state(kind, init) if init is not None else None
    j_mask = None if mask is None else jnp.asarray(mask)

    with relaxed_numerics():
        expected = keras_fn(keras_w, x, init)
        cotangents = [jnp.asarray(rng.normal(size=o.shape).astype(np.float32)) for o in expected]
        k_grads = jax.grad(lambda w, x, s: _loss(keras_fn(w, x, s), cotangents), argnums=(0, 1, 2))(
            keras_w, jnp.asarray(x), init
        )
    got = jrnn_fn(params, jnp.asarray(x), j_init, j_mask)
    j_grads = jax.grad(lambda p, x, s: _loss(jrnn_fn(p, x, s, j_mask), cotangents), argnums=(0, 1, 2))(
        params, jnp.asarray(x), j_init
    )

    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    k_param_grads = list(k_grads[0])
    j_param_grads = [g for g in j_grads[0] if g is not None]
    assert len(j_param_grads) == len(k_param_grads)
    for g, e in zip(j_param_grads, k_param_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(j_grads[1], k_grads[1], rtol=1e-5, atol=1e-5)
    if init is not None:
        for g, e in zip(j_grads[2], k_grads[2], strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_stacked_cells_match_keras():
    """keras.layers.RNN(StackedRNNCells([LSTMCell, GRUCell])) with a mask and initial state."""
    rng = np.random.default_rng(11)
    w_lstm = random_weights("lstm", N_IN, 4, seed=1)
    w_gru = random_weights("gru_reset_after", 4, 3, seed=2)
    x = rng.normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right", B, T)
    init = [random_state("lstm", B, 4, seed=3), random_state("gru_reset_after", B, 3, seed=4)]
    with relaxed_numerics():
        cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)]
        layer = keras.layers.RNN(keras.layers.StackedRNNCells(cells), return_sequences=True, return_state=True)
        layer.build((B, T, N_IN))
        layer.set_weights(w_lstm + w_gru)
        expected = jax.tree.leaves(layer(x, mask=mask, initial_state=init))  # y, [h, c], [h]

    cell = jrnn.cells.stacked(
        [
            jrnn.cells.lstm(4, recurrent_activation="sigmoid"),
            jrnn.cells.gru(3, recurrent_activation="sigmoid", reset_after=True),
        ]
    )
    params = (params_from("lstm", w_lstm), params_from("gru_reset_after", w_gru))
    state = (to_state("lstm", init[0]), to_state("gru", init[1]))
    ys, final = jrnn.run(cell.step, params, state, jnp.asarray(x), mask=jnp.asarray(mask))
    got = [ys, *jax.tree.leaves(final)]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)

"""Keras-2 cases (hard_sigmoid = clip(0.2x + 0.5, 0, 1), the default) against float64 NumPy."""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import numpy as np
import oracles
import pytest
from helpers import KINDS, make_cell, make_mask, params_from, random_state, random_weights, to_state

import jrnn

B, T, N_IN, UNITS = 4, 9, 3, 5
ORACLE_STEPS = {
    "simple_rnn": oracles.simple_rnn_step,
    "gru": partial(oracles.gru_step, reset_after=False),
    "gru_reset_after": partial(oracles.gru_step, reset_after=True),
    "lstm": oracles.lstm_step,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "pattern, reverse, zero_output",
    [(None, False, False), ("holes", False, False), ("left", True, False), ("right", True, True)],
)
def test_keras2_defaults_match_float64_oracle(kind, pattern, reverse, zero_output):
    cell = make_cell(kind, UNITS)  # Keras-2 defaults: tanh and hard_sigmoid
    weights = random_weights(kind, N_IN, UNITS, seed=4)
    xs = np.random.default_rng(9).normal(size=(B, T, N_IN)).astype(np.float32)
    init = random_state(kind, B, UNITS, seed=6)
    mask = make_mask(pattern, B, T)
    step = partial(ORACLE_STEPS[kind], act="tanh", rec_act="hard_sigmoid")
    ys_ref, state_ref = oracles.run(step, weights, init, xs, mask, reverse, zero_output)

    ys, state = jrnn.run(
        cell.step,
        params_from(kind, weights),
        to_state(kind, init),
        jnp.asarray(xs),
        mask=None if mask is None else jnp.asarray(mask),
        reverse=reverse,
        zero_output_for_mask=zero_output,
    )
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-5)
    for got, ref in zip(state, state_ref, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_hard_sigmoid_is_the_keras2_function():
    x = jnp.linspace(-4.0, 4.0, 81)
    np.testing.assert_allclose(jrnn.activations.hard_sigmoid(x), np.clip(0.2 * np.asarray(x) + 0.5, 0, 1), atol=1e-7)
    np.testing.assert_allclose(
        jrnn.activations.get("hard_sigmoid_keras3")(x), np.clip(np.asarray(x) / 6 + 0.5, 0, 1), atol=1e-7
    )

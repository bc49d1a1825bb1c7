"""Variational dropout: masks from an explicit key, reused at every step, one per gate under impl 1."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import KINDS, make_cell, params_from, random_weights

import jrnn

B, T, N_IN, UNITS = 3, 6, 4, 5


def _run(cell, params, xs, masks):
    step = cell.step if masks is None else partial(cell.step, dropout=masks)
    return jrnn.run(step, params, cell.init_state((B,)), xs)


def _numpy_lstm_with_masks(weights, xs, m_in, m_rec):
    """Keras' implementation-1 LSTM: gate g sees x * m_in[g] and h * m_rec[g]."""
    kernel, recurrent, bias = (np.asarray(w, np.float64) for w in weights)
    u = recurrent.shape[0]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h, c, ys = np.zeros((B, u)), np.zeros((B, u)), []
    for t in range(xs.shape[1]):
        z = [
            (xs[:, t] * m_in[g]) @ kernel[:, g * u : (g + 1) * u]
            + (h * m_rec[g]) @ recurrent[:, g * u : (g + 1) * u]
            + bias[g * u : (g + 1) * u]
            for g in range(4)
        ]
        c = sig(z[1]) * c + sig(z[0]) * np.tanh(z[2])
        h = sig(z[3]) * np.tanh(c)
        ys.append(h)
    return np.stack(ys, 1)


def test_lstm_per_gate_masks_match_numpy_reference():
    cell = jrnn.cells.lstm(UNITS, recurrent_activation="sigmoid", dropout=0.3, recurrent_dropout=0.4)
    weights = random_weights("lstm", N_IN, UNITS)
    params = params_from("lstm", weights)
    xs = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    masks = cell.dropout_masks(jax.random.key(1), params, (B,))
    assert masks.inputs.shape == (4, B, N_IN) and masks.recurrent.shape == (4, B, UNITS)
    ys, _ = _run(cell, params, xs, masks)
    expected = _numpy_lstm_with_masks(weights, np.asarray(xs), np.asarray(masks.inputs), np.asarray(masks.recurrent))
    np.testing.assert_allclose(ys, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_one_input_mask_is_reused_at_every_step(kind):
    """With a shared input mask, dropout equals running the undropped cell on xs * mask."""
    cell = make_cell(kind, UNITS, dropout=0.5, implementation=2)
    plain = make_cell(kind, UNITS, implementation=2)
    params = params_from(kind, random_weights(kind, N_IN, UNITS))
    xs = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    masks = cell.dropout_masks(jax.random.key(3), params, (B,))
    assert masks.inputs.shape == (1, B, N_IN) and masks.recurrent is None
    ys, _ = _run(cell, params, xs, masks)
    ys_ref, _ = _run(plain, params, xs * masks.inputs[0][:, None, :], None)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_masks_are_deterministic_per_key_and_scaled(kind):
    cell = make_cell(kind, UNITS, dropout=0.25, recurrent_dropout=0.5)
    params = params_from(kind, random_weights(kind, N_IN, UNITS))
    xs = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    m1, m2 = (cell.dropout_masks(jax.random.key(7), params, (B,)) for _ in range(2))
    m3 = cell.dropout_masks(jax.random.key(8), params, (B,))
    np.testing.assert_array_equal(_run(cell, params, xs, m1)[0], _run(cell, params, xs, m2)[0])
    assert not np.allclose(_run(cell, params, xs, m1)[0], _run(cell, params, xs, m3)[0])
    assert not np.allclose(_run(cell, params, xs, m1)[0], _run(cell, params, xs, None)[0])
    gates = {"simple_rnn": 1}.get(kind, 3 if kind.startswith("gru") else 4)
    assert m1.inputs.shape[0] == gates  # implementation=1: one mask per gate
    assert set(np.unique(m1.inputs)) <= {0.0, np.float32(1 / 0.75)}
    assert set(np.unique(m1.recurrent)) <= {0.0, 2.0}


def test_zero_rates_mean_no_masks():
    cell = jrnn.cells.gru(UNITS)
    params = cell.init_params(jax.random.key(0), N_IN)
    assert cell.dropout_masks(jax.random.key(1), params, (B,)) is None


def test_keep_fraction_matches_rate():
    cell = jrnn.cells.simple_rnn(64, dropout=0.3)
    params = cell.init_params(jax.random.key(0), 64)
    masks = cell.dropout_masks(jax.random.key(1), params, (256,))
    assert abs(float(jnp.mean(masks.inputs > 0)) - 0.7) < 0.01


def test_stacked_masks_are_per_cell():
    cell = jrnn.cells.stacked([jrnn.cells.lstm(4, dropout=0.2), jrnn.cells.gru(3)])
    params = cell.init_params(jax.random.key(0), N_IN)
    masks = cell.dropout_masks(jax.random.key(1), params, (B,))
    assert masks[0].inputs.shape == (4, B, N_IN) and masks[1] is None
    xs = jax.random.normal(jax.random.key(2), (B, T, N_IN))
    ys, _ = jrnn.run(partial(cell.step, dropout=masks), params, cell.init_state((B,)), xs)
    assert ys.shape == (B, T, 3)

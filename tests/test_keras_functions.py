"""Initializers, regularizers, constraints and activations against Keras and exact properties."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import relaxed_numerics

import jrnn
from jrnn import constraints, initializers, regularizers

keras = pytest.importorskip("keras")
KEY = jax.random.key(0)


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (1, 4), (7, 28)])
def test_orthogonal_on_the_fused_shape(shape):
    w = np.asarray(initializers.get("orthogonal")(KEY, shape), np.float64)
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-5)
    w2 = np.asarray(initializers.Orthogonal(gain=2.0)(KEY, shape), np.float64)
    np.testing.assert_allclose(w2, 2.0 * w, rtol=1e-6, atol=1e-6)


def test_lstm_recurrent_kernel_is_orthogonal_across_gates():
    params = jrnn.cells.lstm(8).init_params(KEY, 3)
    r = np.asarray(params.recurrent_kernel, np.float64)
    assert r.shape == (8, 32)
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-5)


def test_uniform_bounds():
    w = initializers.get("uniform")(KEY, (200, 200))
    assert -0.05 <= float(w.min()) < -0.049 and 0.049 < float(w.max()) <= 0.05
    w = initializers.RandomUniform(-1.0, 3.0)(KEY, (100, 100))
    assert -1.0 <= float(w.min()) < -0.99 and 2.99 < float(w.max()) <= 3.0


@pytest.mark.parametrize("units, n_in, gates", [(8, 5, 4), (7, 3, 3), (1, 1, 1)])
def test_glorot_uniform_limit_uses_the_fused_shape(units, n_in, gates):
    params = {4: jrnn.cells.lstm, 3: jrnn.cells.gru, 1: jrnn.cells.simple_rnn}[gates](units).init_params(KEY, n_in)
    limit = math.sqrt(6.0 / (n_in + gates * units))
    assert float(jnp.max(jnp.abs(params.kernel))) <= limit
    big = initializers.get("glorot_uniform")(KEY, (300, 4 * 300))
    assert float(jnp.max(jnp.abs(big))) > 0.99 * math.sqrt(6.0 / (300 + 1200))


@pytest.mark.parametrize(
    "name, scale, fan",
    [("glorot_normal", 1.0, "avg"), ("he_normal", 2.0, "in"), ("lecun_normal", 1.0, "in"), ("he_uniform", 2.0, "in")],
)
def test_variance_scaling_standard_deviations(name, scale, fan):
    """Keras' variance is scale / n, n the fan of the mode; truncation is corrected for."""
    shape = (400, 1200)
    n = {"avg": (400 + 1200) / 2, "in": 400}[fan]
    std = float(jnp.std(initializers.get(name)(KEY, shape)))
    assert abs(std / math.sqrt(scale / n) - 1) < 0.02


def test_fans_of_a_conv_kernel():
    assert initializers.compute_fans((3, 3, 4, 8)) == (36, 72)
    assert initializers.compute_fans((5,)) == (5, 5)


def test_truncated_normal_stays_within_two_stddevs():
    w = initializers.get("truncated_normal")(KEY, (300, 300))
    assert float(jnp.max(jnp.abs(w))) <= 0.1 + 1e-7


def test_simple_initializers_and_lookup_forms():
    assert float(initializers.get("ones")(KEY, (2,)).sum()) == 2.0
    np.testing.assert_array_equal(initializers.Constant(0.3)(KEY, (2,)), np.full(2, 0.3, np.float32))
    np.testing.assert_array_equal(initializers.get("identity")(KEY, (2, 3)), np.eye(2, 3))
    assert initializers.get("GlorotUniform") == initializers.get("glorot_uniform")
    assert initializers.get({"class_name": "Orthogonal", "config": {"gain": 0.5, "seed": None}}).gain == 0.5


@pytest.mark.parametrize("bias_initializer", ["zeros", "normal", "ones"])
def test_unit_forget_bias_puts_exactly_one_in_the_forget_slice(bias_initializer):
    units = 6
    bias = jrnn.cells.lstm(units, bias_initializer=bias_initializer).init_params(KEY, 3).bias
    np.testing.assert_array_equal(bias[units : 2 * units], np.ones(units))
    assert bias.shape == (4 * units,)
    if bias_initializer == "zeros":
        np.testing.assert_array_equal(bias[:units], 0.0)
        np.testing.assert_array_equal(bias[2 * units :], 0.0)
    no_forget = jrnn.cells.lstm(units, unit_forget_bias=False).init_params(KEY, 3).bias
    np.testing.assert_array_equal(no_forget, np.zeros(4 * units))


W = np.random.default_rng(0).normal(size=(6, 12)).astype(np.float32)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (regularizers.l1(0.03), "L1(0.03)"),
        (regularizers.l2(0.02), "L2(0.02)"),
        (regularizers.l1_l2(0.01, 0.04), "L1L2(0.01, 0.04)"),
        (regularizers.get("l2"), "L2(0.01)"),
    ],
)
def test_regularizers_match_keras(ours, theirs):
    with relaxed_numerics():
        expected = eval(f"keras.regularizers.{theirs}")(W)
    np.testing.assert_allclose(ours(jnp.asarray(W)), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (constraints.MaxNorm(1.5), "MaxNorm(1.5)"),
        (constraints.MaxNorm(1.0, axis=1), "MaxNorm(1.0, axis=1)"),
        (constraints.NonNeg(), "NonNeg()"),
        (constraints.UnitNorm(), "UnitNorm()"),
        (constraints.MinMaxNorm(0.5, 1.2, rate=0.7), "MinMaxNorm(0.5, 1.2, rate=0.7)"),
    ],
)
def test_constraints_match_keras(ours, theirs):
    with relaxed_numerics():
        expected = eval(f"keras.constraints.{theirs}")(W)
    np.testing.assert_allclose(ours(jnp.asarray(W)), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "name", ["tanh", "sigmoid", "relu", "elu", "selu", "softplus", "softsign", "exponential", "linear"]
)
def test_activations_match_keras(name):
    x = jnp.linspace(-3.0, 3.0, 61)
    with relaxed_numerics():
        expected = keras.activations.get(name)(x)
    np.testing.assert_allclose(jrnn.activations.get(name)(x), expected, rtol=1e-6, atol=1e-7)
    with relaxed_numerics():
        keras3_hard = keras.activations.get("hard_sigmoid")(x)
    np.testing.assert_allclose(jrnn.activations.get("hard_sigmoid_keras3")(x), keras3_hard, atol=1e-7)
    assert jrnn.activations.get(None)(x) is x

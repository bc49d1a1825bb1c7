"""Shared test fixtures: random gate-distinct weights, masks, and cell builders."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import numpy as np

import jrnn

KINDS = ("simple_rnn", "gru", "gru_reset_after", "lstm")
GATES = {"simple_rnn": 1, "gru": 3, "gru_reset_after": 3, "lstm": 4}
PARAMS = {
    "simple_rnn": jrnn.cells.SimpleRNNParams,
    "gru": jrnn.cells.GRUParams,
    "gru_reset_after": jrnn.cells.GRUParams,
    "lstm": jrnn.cells.LSTMParams,
}


def make_cell(kind: str, units: int, **kwargs) -> jrnn.Cell:
    if kind == "simple_rnn":
        kwargs.pop("recurrent_activation", None)
        kwargs.pop("implementation", None)
        return jrnn.cells.simple_rnn(units, **kwargs)
    if kind == "gru":
        return jrnn.cells.gru(units, reset_after=False, **kwargs)
    if kind == "gru_reset_after":
        return jrnn.cells.gru(units, reset_after=True, **kwargs)
    return jrnn.cells.lstm(units, **kwargs)


def random_weights(kind: str, n_in: int, units: int, *, seed: int = 0, use_bias: bool = True) -> list[np.ndarray]:
    """Keras-layout weights, ``normal * 0.3``: every entry (so every gate) distinct."""
    rng = np.random.default_rng(seed)
    g = GATES[kind] * units
    weights = [rng.normal(size=(n_in, g)), rng.normal(size=(units, g))]
    if use_bias:
        weights.append(rng.normal(size=(2, g) if kind == "gru_reset_after" else (g,)))
    return [(0.3 * w).astype(np.float32) for w in weights]


def params_from(kind: str, weights) -> tuple:
    return PARAMS[kind](*[jax.numpy.asarray(w) for w in weights])


def random_state(kind: str, batch: int, units: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = 2 if kind == "lstm" else 1
    return [(0.5 * rng.normal(size=(batch, units))).astype(np.float32) for _ in range(n)]


def to_state(kind: str, arrays):
    arrays = [jax.numpy.asarray(a) for a in arrays]
    if kind == "lstm":
        return jrnn.cells.LSTMState(*arrays)
    if kind == "simple_rnn":
        return jrnn.cells.SimpleRNNState(*arrays)
    return jrnn.cells.GRUState(*arrays)


def make_mask(pattern: str | None, batch: int, steps: int) -> np.ndarray | None:
    """right/left padding, holes (and one fully masked row when batch > 1)."""
    if pattern is None:
        return None
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = max(1, steps - 2)
    right = np.arange(steps)[None, :] < lengths[:, None]
    if pattern == "right":
        return right
    if pattern == "left":
        return right[:, ::-1].copy()
    holes = rng.random((batch, steps)) < 0.6
    holes[0, :] = True
    holes[0, min(1, steps - 1)] = steps == 1  # a hole, unless the row has one step
    if batch > 1:
        holes[-1, :] = False
    return holes


@contextlib.contextmanager
def count_compiles():
    """Yields a list that collects one entry per XLA backend compilation inside the block."""
    compiled = []

    def listener(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def relaxed_numerics():
    """Keras relies on implicit rank promotion; jrnn's own tests run strict."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def keras_reference(layer, x, *, mask=None, initial_state=None, seed=0):
    """A built Keras layer's outputs, random cotangents, and the gradients of
    ``sum(outputs * cotangents)`` with respect to its trainable weights and the input."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    with relaxed_numerics():
        frozen = [v.value for v in layer.non_trainable_variables]
        weights = [v.value for v in layer.trainable_variables]

        def outputs(w, x):
            out, _ = layer.stateless_call(w, frozen, x, mask=mask, initial_state=initial_state)
            return jax.tree.leaves(out)

        expected = outputs(weights, x)
        cotangents = [jnp.asarray(rng.normal(size=o.shape).astype(np.float32)) for o in expected]

        def loss(w, x):
            return sum(jnp.sum(o * c) for o, c in zip(outputs(w, x), cotangents, strict=True))

        grads = jax.grad(loss, argnums=(0, 1))(weights, jnp.asarray(x))
    return expected, cotangents, grads


def keras2_convert(weights, gates, from_cudnn):
    """Keras 2's ``_convert_rnn_weights`` written out with NumPy, per its documentation."""
    order = "F" if from_cudnn else "C"
    kernel = np.hstack([k.T.reshape(k.shape, order=order) for k in np.hsplit(weights[0], gates)])
    recurrent = np.hstack([k.T for k in np.hsplit(weights[1], gates)])
    bias = weights[2]
    if gates == 4:
        bias = np.sum(np.split(bias, 2), axis=0) if from_cudnn else np.tile(0.5 * bias, 2)
    else:
        bias = bias.reshape((2, -1) if from_cudnn else -1)
    return [kernel, recurrent, bias]

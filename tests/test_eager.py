"""Eager calls (a notebook cell run again) reuse the compiled layer, and never another cell's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx
from helpers import count_compiles, make_mask

import jrnn

X = jax.random.normal(jax.random.key(0), (3, 6, 4))
VIDEO = jax.random.normal(jax.random.key(1), (2, 3, 5, 5, 2))


class UserCell(nnx.Module):
    """A Keras-style user cell: ``state_size`` and ``__call__(x, states)``."""

    def __init__(self, units, input_dim, *, rngs):
        self.state_size = units
        self.kernel = nnx.Param(0.5 * jax.random.normal(rngs.params(), (input_dim, units)))
        self.recurrent_kernel = nnx.Param(0.5 * jax.random.normal(rngs.params(), (units, units)))

    def __call__(self, x, states):
        h = jnp.tanh(x @ self.kernel[...] + states[0] @ self.recurrent_kernel[...])
        return h, [h]


class LinenUserCell(linen.Module):
    """The same cell for Linen: hashable fields, so its unbound clones are equal across applies."""

    units: int
    activation: str = "tanh"

    @property
    def state_size(self):
        return self.units

    @linen.compact
    def __call__(self, x, states):
        pre = linen.Dense(self.units, name="kernel")(x) + linen.Dense(self.units, name="recurrent")(states[0])
        h = getattr(jnp, self.activation)(pre)
        return h, [h]


def _nnx_call(layer, x, **kwargs):
    return lambda: layer(x, **kwargs)


def _linen_call(module, x, **kwargs):
    variables = module.init(jax.random.key(0), x)
    return lambda: module.apply(variables, x, **kwargs)


# Scan-path layers (compiled anew on every eager call before rnn had its jit), and the fused path.
CALLS = {
    "nnx_lstm_scan": lambda: _nnx_call(jrnn.nnx.LSTM(5, input_dim=4, use_fused=False, rngs=nnx.Rngs(0)), X),
    "nnx_gru_dropout_training": lambda: _nnx_call(  # a new dropout key, so new masks, every call
        jrnn.nnx.GRU(5, input_dim=4, dropout=0.2, recurrent_dropout=0.3, use_fused=False, rngs=nnx.Rngs(0, dropout=1)),
        X,
        training=True,
    ),
    "nnx_stacked": lambda: _nnx_call(
        jrnn.nnx.RNN(
            jrnn.nnx.StackedRNNCells(
                [
                    jrnn.nnx.LSTMCell(5, input_dim=4, rngs=nnx.Rngs(0)),
                    jrnn.nnx.GRUCell(3, input_dim=5, rngs=nnx.Rngs(1)),
                ]
            )
        ),
        X,
    ),
    "nnx_conv_lstm": lambda: _nnx_call(
        jrnn.nnx.ConvLSTM2D(3, (3, 3), padding="same", input_shape=VIDEO.shape[1:], rngs=nnx.Rngs(0)), VIDEO
    ),
    "nnx_user_cell": lambda: _nnx_call(jrnn.nnx.RNN(UserCell(5, 4, rngs=nnx.Rngs(0)), return_sequences=True), X),
    "nnx_lstm_fused": lambda: _nnx_call(jrnn.nnx.LSTM(5, input_dim=4, rngs=nnx.Rngs(0)), X),
    "linen_lstm_scan": lambda: _linen_call(jrnn.linen.LSTM(5, use_fused=False), X),
    "linen_stacked": lambda: _linen_call(jrnn.linen.RNN([jrnn.linen.LSTMCell(5), jrnn.linen.GRUCell(3)]), X),
    "linen_conv_lstm": lambda: _linen_call(jrnn.linen.ConvLSTM2D(3, (3, 3), padding="same"), VIDEO),
    "linen_user_cell": lambda: _linen_call(jrnn.linen.RNN(LinenUserCell(5), return_sequences=True), X),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_a_repeated_eager_layer_call_compiles_nothing(case):
    call = CALLS[case]()
    first = call()
    with count_compiles() as compiled:
        second = call()
    assert not compiled
    if case != "nnx_gru_dropout_training":  # the same inputs and weights: the same outputs
        np.testing.assert_array_equal(second, first)


def test_cells_of_the_same_shapes_keep_their_own_compiled_layers():
    """Two cells with the same param and state shapes but different math, called eagerly in turn."""
    cells = [jrnn.cells.lstm(5, activation=a, recurrent_activation="sigmoid") for a in ("tanh", "relu")]
    params = cells[0].init_params(jax.random.key(3), 4)
    mask = jnp.asarray(make_mask("holes", 3, 6))
    outputs = []
    for _ in range(2):  # the second round runs from the cache
        for cell in cells:
            for use_fused in (False, True):
                got = jrnn.layers.rnn(cell, params, X, mask=mask, return_sequences=True, use_fused=use_fused).output
                want, _ = jrnn.run(cell.step, params, cell.init_state((3,)), X, mask=mask)
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
                outputs.append(got)
    assert not np.allclose(outputs[0], outputs[2])  # the two activations do differ here


def test_linen_and_stacked_cells_are_built_once_per_configuration():
    """Linen builds its pure cell in every apply; equal arguments give the one cell object."""
    first, again = jrnn.linen.LSTMCell(5).pure_cell(), jrnn.linen.LSTMCell(5).pure_cell()
    assert first is again
    assert jrnn.linen.LSTMCell(5, activation="relu").pure_cell() is not first
    assert jrnn.linen.LSTMCell(5, dropout=0.5).pure_cell() is not first
    a, b = jrnn.cells.lstm(5), jrnn.cells.gru(3)
    assert jrnn.cells.stacked([a, b]) is jrnn.cells.stacked((a, b))
    assert jrnn.cells.stacked([a, jrnn.cells.gru(3)]) is not jrnn.cells.stacked([a, b])
    # An argument that cannot be hashed builds a new cell every time, as before.
    module = jrnn.linen.ConvLSTM2D(3, [3, 3], padding="same")
    variables = module.init(jax.random.key(0), VIDEO)
    np.testing.assert_allclose(
        module.apply(variables, VIDEO),
        jrnn.linen.ConvLSTM2D(3, (3, 3), padding="same").apply(variables, VIDEO),
        rtol=1e-6,
        atol=1e-6,
    )


def test_under_a_transformation_the_layer_is_traced_inline():
    """No jit boundary of its own in a caller's trace: it changed what autodiff saves (remat kept
    more, tests/test_ecosystem.py), and a caller's jit compiles the whole step anyway."""
    cell = jrnn.cells.lstm(5)
    params = cell.init_params(jax.random.key(0), 4)
    for use_fused in (False, True):
        jaxpr = jax.make_jaxpr(lambda p, x, f=use_fused: jrnn.layers.rnn(cell, p, x, use_fused=f).output)(params, X)
        assert "name=_layer" not in str(jaxpr)
    from jrnn._types import ByIdentity
    from jrnn.layers._rnn import _compiled_layer, _Options

    options = _Options(False, False, False, False, False, False, False, "auto")
    eager_path = lambda p, x: _compiled_layer(ByIdentity(cell), options, p, x, None, None, None, None)  # noqa: E731
    assert "name=_layer" in str(jax.make_jaxpr(eager_path)(params, X))  # what the probe above looks for


def test_user_cells_of_one_structure_share_the_compiled_layer_not_the_weights():
    """NNX user cells are keyed by their graph definition, which holds no weights."""
    layers = [jrnn.nnx.RNN(UserCell(5, 4, rngs=nnx.Rngs(seed)), return_sequences=True) for seed in (0, 1)]
    outputs = [layer(X) for layer in layers]
    with count_compiles() as compiled:
        again = [layer(X) for layer in layers]
    assert not compiled
    for layer, got, want in zip(layers, again, outputs, strict=True):
        np.testing.assert_array_equal(got, want)
        cell = layer.cell
        h = jnp.zeros((3, 5))
        for t in range(X.shape[1]):  # the cell's own loop
            h = jnp.tanh(X[:, t] @ cell.kernel[...] + h @ cell.recurrent_kernel[...])
            np.testing.assert_allclose(got[:, t], h, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0], outputs[1])


def test_linen_user_cells_share_the_compiled_layer_only_with_equal_configurations():
    """Linen user cells are keyed by their unbound clone, whose fields define what it computes."""
    modules = [jrnn.linen.RNN(LinenUserCell(5, activation), return_sequences=True) for activation in ("tanh", "sin")]
    variables = [m.init(jax.random.key(seed), X) for m, seed in zip(modules, (0, 1), strict=True)]
    outputs = [m.apply(v, X) for m, v in zip(modules, variables, strict=True)]
    other_weights = modules[0].apply(variables[1], X)  # the sin cell's weights, in the tanh cell
    with count_compiles() as compiled:
        again = [m.apply(v, X) for m, v in zip(modules, variables, strict=True)]
    assert not compiled
    for (module, v), got, want in zip(zip(modules, variables, strict=True), again, outputs, strict=True):
        np.testing.assert_array_equal(got, want)
        act, p = getattr(jnp, module.cell.activation), v["params"]["cell"]
        h = jnp.zeros((3, 5))
        (wk, bk), (wr, br) = ((p[name]["kernel"], p[name]["bias"]) for name in ("kernel", "recurrent"))
        for t in range(X.shape[1]):  # the cell's own loop
            h = act(X[:, t] @ wk + bk[None] + h @ wr + br[None])
            np.testing.assert_allclose(got[:, t], h, rtol=1e-5, atol=1e-6)
    assert not np.allclose(other_weights, outputs[0])

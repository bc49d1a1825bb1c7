"""jrnn.nnx against Keras 3 (JAX backend) and against jrnn.run, with copied random weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import make_mask, random_state, random_weights, relaxed_numerics

import jrnn

keras = pytest.importorskip("keras")
B, T, N_IN, UNITS = 3, 6, 5, 4
KINDS = {
    "simple_rnn": (jrnn.nnx.SimpleRNN, "SimpleRNN", {}),
    "gru": (jrnn.nnx.GRU, "GRU", {"reset_after": False}),
    "gru_reset_after": (jrnn.nnx.GRU, "GRU", {"reset_after": True}),
    "lstm_impl1": (jrnn.nnx.LSTM, "LSTM", {"implementation": 1}),
    "lstm_impl2": (jrnn.nnx.LSTM, "LSTM", {"implementation": 2}),
}
WEIGHT_KIND = {"lstm_impl1": "lstm", "lstm_impl2": "lstm"}


def _pair(kind, **options):
    ours, theirs, extra = KINDS[kind]
    if kind != "simple_rnn":
        extra = {**extra, "recurrent_activation": "sigmoid"}
    keras_extra = {k: v for k, v in extra.items() if k != "implementation"}
    with relaxed_numerics():
        k_layer = getattr(keras.layers, theirs)(UNITS, **keras_extra, **options)
        k_layer.build((B, T, N_IN))
    layer = ours(UNITS, input_dim=N_IN, **extra, **options, rngs=nnx.Rngs(0))
    weights = random_weights(WEIGHT_KIND.get(kind, kind), N_IN, UNITS, seed=2)
    with relaxed_numerics():
        k_layer.set_weights(weights)
    layer.set_weights(weights)
    return layer, k_layer


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_layer_matches_keras_values_and_gradients(kind, go_backwards):
    options = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    layer, k_layer = _pair(kind, **options)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right" if go_backwards else "holes", B, T)
    n_states = 2 if kind.startswith("lstm") else 1
    init = random_state("lstm" if n_states == 2 else "gru", B, UNITS)
    with relaxed_numerics():
        # Masks + initial state: Keras' scan path repeats the initial state at leading masked
        # steps; its unrolled path follows the documented rule (zeros), as jrnn does everywhere.
        k_layer.unroll = True
        frozen = [v.value for v in k_layer.non_trainable_variables]
        k_fn = lambda w, x: k_layer.stateless_call(w, frozen, x, mask=mask, initial_state=init)[0]  # noqa: E731
        expected = k_fn([v.value for v in k_layer.trainable_variables], x)
        cot = [jnp.asarray(rng.normal(size=o.shape).astype(np.float32)) for o in expected]
        k_grads = jax.grad(lambda w, x: sum(jnp.sum(o * c) for o, c in zip(k_fn(w, x), cot, strict=True)), (0, 1))(
            [v.value for v in k_layer.trainable_variables], jnp.asarray(x)
        )
    got = layer(jnp.asarray(x), mask=jnp.asarray(mask), initial_state=init)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)

    def loss(layer, x):
        return sum(
            jnp.sum(o * c) for o, c in zip(layer(x, mask=jnp.asarray(mask), initial_state=init), cot, strict=True)
        )

    g_layer, g_x = nnx.grad(loss, argnums=(0, 1))(layer, jnp.asarray(x))
    cell_grads = g_layer["cell"]
    ours = [cell_grads[n][...] for n in ("kernel", "recurrent_kernel", "bias")]
    for g, e in zip(ours, k_grads[0], strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x, k_grads[1], rtol=1e-5, atol=1e-5)


def test_rnn_over_stacked_cells_matches_keras():
    w1, w2 = random_weights("lstm", N_IN, 4, seed=1), random_weights("gru_reset_after", 4, 3, seed=2)
    x = np.random.default_rng(0).normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right", B, T)
    with relaxed_numerics():
        k_cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)]
        k_layer = keras.layers.RNN(k_cells, return_sequences=True, return_state=True)
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(w1 + w2)
        expected = jax.tree.leaves(k_layer(x, mask=mask))
    cells_ = [
        jrnn.nnx.LSTMCell(4, input_dim=N_IN, recurrent_activation="sigmoid", rngs=nnx.Rngs(0)),
        jrnn.nnx.GRUCell(3, input_dim=4, recurrent_activation="sigmoid", reset_after=True, rngs=nnx.Rngs(1)),
    ]
    layer = jrnn.nnx.RNN(cells_, return_sequences=True, return_state=True)
    layer.set_weights(w1 + w2)
    np.testing.assert_allclose(layer.get_weights()[3], w2[0])
    got = layer(jnp.asarray(x), mask=jnp.asarray(mask))
    assert len(got) == len(expected) == 4
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


class MinimalRNNCell(nnx.Module):
    """The Keras documentation's example cell, written as an NNX module."""

    def __init__(self, units, input_dim, *, rngs):
        self.units = units
        self.state_size = units
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (input_dim, units)) * 0.3)
        self.recurrent_kernel = nnx.Param(jax.random.normal(rngs.params(), (units, units)) * 0.3)

    def __call__(self, inputs, states):
        prev_output = states[0]
        h = inputs @ self.kernel[...]
        output = h + prev_output @ self.recurrent_kernel[...]
        return output, [output]


def _minimal_step(p, state, x):
    out = x @ p["kernel"] + state @ p["recurrent_kernel"]
    return out, out


def test_minimal_rnn_cell_alone_and_stacked():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    cell = MinimalRNNCell(32, N_IN, rngs=nnx.Rngs(0))
    layer = jrnn.nnx.RNN(cell, return_sequences=True)
    p = {"kernel": cell.kernel[...], "recurrent_kernel": cell.recurrent_kernel[...]}
    expected, _ = jrnn.run(_minimal_step, p, jnp.zeros((B, 32)), x)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)

    c1, c2 = MinimalRNNCell(32, N_IN, rngs=nnx.Rngs(1)), MinimalRNNCell(64, 32, rngs=nnx.Rngs(2))
    stacked = jrnn.nnx.RNN([c1, c2])
    p1 = {"kernel": c1.kernel[...], "recurrent_kernel": c1.recurrent_kernel[...]}
    p2 = {"kernel": c2.kernel[...], "recurrent_kernel": c2.recurrent_kernel[...]}
    ys1, _ = jrnn.run(_minimal_step, p1, jnp.zeros((B, 32)), x)
    ys2, _ = jrnn.run(_minimal_step, p2, jnp.zeros((B, 64)), ys1)
    np.testing.assert_allclose(stacked(x), ys2[:, -1], rtol=1e-5, atol=1e-5)


def test_stateful_batches_equal_one_run_and_reset():
    x = jax.random.normal(jax.random.key(0), (B, 2 * T, N_IN))
    layer = jrnn.nnx.LSTM(UNITS, batch_input_shape=(B, T, N_IN), stateful=True, return_sequences=True, rngs=nnx.Rngs(0))
    whole = jrnn.nnx.LSTM(UNITS, input_dim=N_IN, return_sequences=True, rngs=nnx.Rngs(0))
    y = jnp.concatenate([layer(x[:, :T]), layer(x[:, T:])], axis=1)
    np.testing.assert_allclose(y, whole(x), rtol=1e-5, atol=1e-6)
    layer.reset_states()
    jax.tree.map(lambda s: np.testing.assert_array_equal(s, 0.0), layer.states.get_value())
    np.testing.assert_allclose(layer(x[:, :T]), whole(x[:, :T]), rtol=1e-5, atol=1e-6)
    h, c = (jnp.asarray(a) for a in random_state("lstm", B, UNITS))
    layer.reset_states(states=[h, c])
    np.testing.assert_allclose(layer(x[:, :T]), whole(x[:, :T], initial_state=[h, c]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_type", [jrnn.nnx.LSTM, jrnn.nnx.GRU, jrnn.nnx.SimpleRNN])
def test_config_round_trip(layer_type):
    layer = layer_type(
        UNITS,
        input_dim=N_IN,
        activation="relu",
        dropout=0.1,
        go_backwards=True,
        kernel_regularizer=jrnn.regularizers.l2(0.02),
        recurrent_constraint="non_neg",
        rngs=nnx.Rngs(0),
    )
    config = layer.get_config()
    assert config["units"] == UNITS and config["activation"] == "relu" and config["go_backwards"] is True
    again = layer_type.from_config(config, rngs=nnx.Rngs(1))
    assert again.get_config() == config


def test_regularization_losses_equal_keras_layer_losses():
    weights = random_weights("lstm", N_IN, UNITS, seed=5)
    x = np.random.default_rng(1).normal(size=(B, T, N_IN)).astype(np.float32)
    regs = dict(kernel_regularizer="l2", recurrent_regularizer=jrnn.regularizers.l1(0.03), bias_regularizer="l1_l2")
    layer = jrnn.nnx.LSTM(
        UNITS,
        input_dim=N_IN,
        recurrent_activation="sigmoid",  # Keras 3 default
        activity_regularizer=jrnn.regularizers.l2(0.05),
        **regs,
        rngs=nnx.Rngs(0),
    )
    layer.set_weights(weights)
    layer(jnp.asarray(x))
    with relaxed_numerics():
        k_layer = keras.layers.LSTM(
            UNITS,
            kernel_regularizer=keras.regularizers.L2(0.01),
            recurrent_regularizer=keras.regularizers.L1(0.03),
            bias_regularizer=keras.regularizers.L1L2(0.01, 0.01),
            activity_regularizer=keras.regularizers.L2(0.05),
        )
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(weights)
        k_layer(x)
        expected = float(sum(k_layer.losses))
    np.testing.assert_allclose(float(layer.regularization_loss()), expected, rtol=1e-5)


def test_dropout_follows_training_and_rng():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    make = lambda: jrnn.nnx.GRU(  # noqa: E731
        UNITS, input_dim=N_IN, dropout=0.3, recurrent_dropout=0.3, rngs=nnx.Rngs(0, dropout=7)
    )
    a, b = make(), make()
    y_a, y_b = a(x, training=True), b(x, training=True)
    np.testing.assert_array_equal(y_a, y_b)  # same rng stream, same masks
    assert not np.allclose(a(x, training=True), y_a)  # the stream advances
    np.testing.assert_allclose(a(x, training=False), jrnn.nnx.GRU(UNITS, input_dim=N_IN, rngs=nnx.Rngs(0))(x))
    a.eval()
    np.testing.assert_array_equal(a(x), a(x, training=False))
    a.train()
    assert not np.allclose(a(x), a(x, training=False))


def test_training_step_reduces_the_loss():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 8, 3)).astype(np.float32))
    target = jnp.asarray(np.cumsum(np.asarray(x)[..., 0], axis=1)[:, -1:] / 4)

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.lstm = jrnn.nnx.LSTM(16, input_dim=3, rngs=rngs)
            self.head = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.head(self.lstm(x))

    model = Model(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
        losses = [float(step(model, optimizer)) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]


def test_mixed_precision_keeps_float32_params():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    layer = jrnn.nnx.LSTM(UNITS, input_dim=N_IN, dtype=jnp.bfloat16, return_sequences=True, rngs=nnx.Rngs(0))
    ref = jrnn.nnx.LSTM(UNITS, input_dim=N_IN, return_sequences=True, rngs=nnx.Rngs(0))
    y = layer(x)
    assert y.dtype == jnp.bfloat16 and layer.cell.kernel[...].dtype == jnp.float32
    np.testing.assert_allclose(y.astype(jnp.float32), ref(x), atol=0.03)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"`input_dim` must be given \(or input_shape / batch_input_shape\)"):
        jrnn.nnx.LSTM(UNITS, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`batch_size` must be given \(or batch_input_shape\) for a stateful"):
        jrnn.nnx.LSTM(UNITS, input_dim=N_IN, stateful=True, rngs=nnx.Rngs(0))
    stateful = jrnn.nnx.GRU(UNITS, input_dim=N_IN, stateful=True, batch_size=B, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`inputs` must be a batch of 3 for this stateful layer. Received: batch 2"):
        stateful(jnp.ones((2, T, N_IN)))
    layer = jrnn.nnx.LSTM(UNITS, input_dim=N_IN, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`initial_state` must be a list of 2 state arrays.*Received: 1 arrays"):
        layer(jnp.ones((B, T, N_IN)), initial_state=[jnp.zeros((B, UNITS))])
    with pytest.raises(ValueError, match=r"`initial_state\[1\]` must be of shape \(3, 4\). Received: shape \(3, 5\)"):
        layer(jnp.ones((B, T, N_IN)), initial_state=[jnp.zeros((B, UNITS)), jnp.zeros((B, 5))])
    user = jrnn.nnx.RNN(MinimalRNNCell(4, N_IN, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"`constants` must be None for a step that takes no `constants` keyword"):
        user(jnp.ones((B, T, N_IN)), constants=jnp.ones((B, 2)))
    with pytest.raises(ValueError, match=r"`mask` must be of shape \(3, 6\) \(batch, time\)"):
        layer(jnp.ones((B, T, N_IN)), mask=jnp.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match=r"`rngs` must be given at construction"):
        jrnn.nnx.RNN(jrnn.nnx.LSTMCell(UNITS, input_dim=N_IN, dropout=0.5, rngs=nnx.Rngs(0)))(
            jnp.ones((B, T, N_IN)), training=True
        )
    with pytest.raises(TypeError, match=r"`cell` must be a jrnn.nnx cell"):
        jrnn.nnx.RNN(object())


def test_constraint_transform_keeps_constraints_after_each_step():
    x = jax.random.normal(jax.random.key(0), (8, T, N_IN))
    layer = jrnn.nnx.LSTM(
        UNITS,
        input_dim=N_IN,
        kernel_constraint=jrnn.constraints.MaxNorm(0.5),
        recurrent_constraint="non_neg",
        rngs=nnx.Rngs(0),
    )
    tx = optax.chain(optax.sgd(0.5), jrnn.nnx.constraints(layer))
    optimizer = nnx.Optimizer(layer, tx, wrt=nnx.Param)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
        for _ in range(3):
            grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2) - jnp.sum(m.cell.kernel[...]) * 10)(layer)
            optimizer.update(layer, grads)
            kernel, recurrent = layer.cell.kernel[...], layer.cell.recurrent_kernel[...]
            assert float(jnp.max(jnp.linalg.norm(kernel, axis=0))) <= 0.5 + 1e-5
            assert float(jnp.min(recurrent)) >= 0.0
    # The projection is Keras' own function of the unconstrained update (checked in test_keras_functions).
    np.testing.assert_allclose(jrnn.constraints.MaxNorm(0.5)(kernel), kernel, atol=1e-6)


def test_masking_helpers():
    tokens = jnp.array([[4, 2, 0, 0], [0, 0, 5, 1]])
    np.testing.assert_array_equal(jrnn.compute_mask(tokens), tokens != 0)
    x = jnp.where(jrnn.compute_mask(tokens)[..., None], jax.random.normal(jax.random.key(0), (2, 4, 3)), 0.0)
    masked, mask = jrnn.nnx.Masking(0.0)(x)
    np.testing.assert_array_equal(mask, tokens != 0)
    layer = jrnn.nnx.GRU(UNITS, input_dim=3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(layer(masked, mask=mask)[0], layer(x[:1, :2])[0], rtol=1e-6)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_matches_keras(merge_mode):
    w_f, w_b = random_weights("lstm", N_IN, UNITS, seed=1), random_weights("lstm", N_IN, UNITS, seed=2)
    x = np.random.default_rng(0).normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right", B, T)
    init = random_state("lstm", B, UNITS, seed=3) + random_state("lstm", B, UNITS, seed=4)
    options = dict(return_sequences=True, return_state=True)
    with relaxed_numerics():
        # The scan path: Keras' unrolled path ignores zero_output_for_mask, which Bidirectional sets.
        k_layer = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, **options), merge_mode=merge_mode)
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(w_f + w_b)
        expected = k_layer(x, mask=mask, initial_state=init)
    layer = jrnn.nnx.Bidirectional(
        jrnn.nnx.LSTM(UNITS, input_dim=N_IN, recurrent_activation="sigmoid", **options, rngs=nnx.Rngs(0)),
        merge_mode=merge_mode,
        rngs=nnx.Rngs(1),
    )
    layer.set_weights(w_f + w_b)
    got = layer(jnp.asarray(x), mask=jnp.asarray(mask), initial_state=[jnp.asarray(s) for s in init])
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)

    def loss(layer):
        outs = layer(jnp.asarray(x), mask=jnp.asarray(mask), initial_state=[jnp.asarray(s) for s in init])
        return sum(jnp.sum(jnp.sin(o)) for o in outs)

    grads = nnx.grad(loss)(layer)
    with relaxed_numerics():
        frozen = [v.value for v in k_layer.non_trainable_variables]
        k_loss = lambda w: sum(  # noqa: E731
            jnp.sum(jnp.sin(o)) for o in k_layer.stateless_call(w, frozen, x, mask=mask, initial_state=init)[0]
        )
        k_grads = jax.grad(k_loss)([v.value for v in k_layer.trainable_variables])
    ours = [
        grads[side]["cell"][n][...]
        for side in ("forward_layer", "backward_layer")
        for n in ("kernel", "recurrent_kernel", "bias")
    ]
    for g, e in zip(ours, k_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_bidirectional_bad_merge_mode():
    with pytest.raises(ValueError, match=r"`merge_mode` must be one of \('concat', 'sum', 'mul', 'ave', None\)"):
        jrnn.nnx.Bidirectional(jrnn.nnx.GRU(UNITS, input_dim=N_IN, rngs=nnx.Rngs(0)), merge_mode="max")


def test_rnn_over_a_pure_cell_equals_the_pure_layer_function():
    cell = jrnn.cells.stacked([jrnn.cells.lstm(4, dropout=0.2), jrnn.cells.gru(3, reset_after=True)])
    layer = jrnn.nnx.RNN(cell, input_dim=N_IN, return_sequences=True, return_state=True, rngs=nnx.Rngs(0, dropout=3))
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    mask = jnp.asarray(make_mask("holes", B, T))
    _, params = layer.cell.pure()
    expected = jrnn.layers.rnn(cell, params, x, mask=mask, return_sequences=True)
    y, *states = layer(x, mask=mask, training=False)
    np.testing.assert_allclose(y, expected.output, rtol=1e-6)
    for s, e in zip(states, jrnn.layers.states_to_list(expected.state), strict=True):
        np.testing.assert_allclose(s, e, rtol=1e-6)
    assert not np.allclose(layer(x, mask=mask, training=True)[0], y)  # dropout keyed from rngs
    grads = nnx.grad(lambda m: jnp.sum(m(x, training=False)[0]))(layer)
    assert jax.tree.leaves(grads)  # the pure cell's params are nnx.Params


def test_return_state_on_a_cell_without_states():
    class Stateless(nnx.Module):
        state_size = ()

        def __call__(self, x, states):
            return jnp.tanh(x), []

    with pytest.raises(ValueError, match=r"`return_state` must be False for a cell without states"):
        jrnn.nnx.RNN(Stateless(), return_state=True)


class ConstantsCell(nnx.Module):
    """A Keras-style cell that uses `constants` (the Keras RNN docs' constants example)."""

    def __init__(self, units, input_dim, constants_dim, *, rngs):
        self.state_size = units
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (input_dim, units)) * 0.3)
        self.constant_kernel = nnx.Param(jax.random.normal(rngs.params(), (constants_dim, units)) * 0.3)

    def __call__(self, inputs, states, constants):
        output = jnp.tanh(inputs @ self.kernel[...] + constants @ self.constant_kernel[...] + states[0])
        return output, [output]


def test_constants_reach_a_user_cell_alone_and_stacked():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    c = jax.random.normal(jax.random.key(1), (B, 2))
    cell = ConstantsCell(4, N_IN, 2, rngs=nnx.Rngs(0))

    def step(p, h, x, *, constants):
        out = jnp.tanh(x @ p[0] + constants @ p[1] + h)
        return out, out

    p = (cell.kernel[...], cell.constant_kernel[...])
    expected, _ = jrnn.run(step, p, jnp.zeros((B, 4)), x, constants=c)
    np.testing.assert_allclose(jrnn.nnx.RNN(cell, return_sequences=True)(x, constants=c), expected, rtol=1e-5)
    lstm = jrnn.nnx.LSTMCell(3, input_dim=4, rngs=nnx.Rngs(1))
    stacked = jrnn.nnx.RNN([cell, lstm])(x, constants=c)
    ys_lstm = jrnn.layers.rnn(lstm.cell, lstm.params, expected)
    np.testing.assert_allclose(stacked, ys_lstm.output, rtol=1e-5)


def test_stateful_composes_with_stacked_cells_and_bidirectional():
    x = jax.random.normal(jax.random.key(0), (B, 2 * T, N_IN))

    def stack(stateful):
        cells_ = [
            jrnn.nnx.GRUCell(4, input_dim=N_IN, rngs=nnx.Rngs(0)),
            jrnn.nnx.LSTMCell(3, input_dim=4, rngs=nnx.Rngs(1)),
        ]
        return jrnn.nnx.RNN(cells_, return_sequences=True, stateful=stateful, batch_size=B)

    layer, whole = stack(True), stack(False)
    y = jnp.concatenate([layer(x[:, :T]), layer(x[:, T:])], axis=1)
    np.testing.assert_allclose(y, whole(x), rtol=1e-5, atol=1e-6)

    bi = jrnn.nnx.Bidirectional(
        jrnn.nnx.LSTM(UNITS, input_dim=N_IN, stateful=True, batch_size=B, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1)
    )
    first = bi(x[:, :T])
    assert not np.allclose(bi(x[:, :T]), first)  # both directions carried their state
    bi.reset_states()
    np.testing.assert_allclose(bi(x[:, :T]), first, rtol=1e-6)


def test_bidirectional_config_round_trip():
    bi = jrnn.nnx.Bidirectional(
        jrnn.nnx.GRU(UNITS, input_dim=N_IN, return_sequences=True, rngs=nnx.Rngs(0)), merge_mode="ave", rngs=nnx.Rngs(1)
    )
    config = bi.get_config()
    assert config["merge_mode"] == "ave" and config["backward_layer"]["config"]["go_backwards"] is True
    assert jrnn.nnx.Bidirectional.from_config(config, rngs=nnx.Rngs(2)).get_config() == config


def test_rnn_over_keras_cells_config_round_trip():
    cells_ = [
        jrnn.nnx.LSTMCell(4, input_dim=N_IN, recurrent_dropout=0.1, rngs=nnx.Rngs(0)),
        jrnn.nnx.GRUCell(3, input_dim=4, reset_after=True, rngs=nnx.Rngs(1)),
    ]
    layer = jrnn.nnx.RNN(cells_, return_sequences=True, go_backwards=True, rngs=nnx.Rngs(2))
    config = layer.get_config()
    assert config["cell"]["class_name"] == "StackedRNNCells"
    assert config["cell"]["config"]["cells"][1]["config"]["reset_after"] is True
    again = jrnn.nnx.RNN.from_config(config, rngs=nnx.Rngs(3))
    assert again.get_config() == config
    again.set_weights(layer.get_weights())
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    np.testing.assert_allclose(again(x, training=False), layer(x, training=False), rtol=1e-6)

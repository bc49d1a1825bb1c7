"""jrnn.linen against Keras 3 (JAX backend) and against jrnn.run, with copied random weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from helpers import keras_reference, make_mask, random_state, random_weights, relaxed_numerics

import jrnn

keras = pytest.importorskip("keras")
B, T, N_IN, UNITS = 3, 6, 5, 4
KINDS = {
    "simple_rnn": (jrnn.linen.SimpleRNN, "SimpleRNN", {}, "simple_rnn"),
    "gru": (jrnn.linen.GRU, "GRU", {"reset_after": False}, "gru"),
    "gru_reset_after": (jrnn.linen.GRU, "GRU", {"reset_after": True}, "gru_reset_after"),
    "lstm_impl1": (jrnn.linen.LSTM, "LSTM", {"implementation": 1}, "lstm"),
    "lstm_impl2": (jrnn.linen.LSTM, "LSTM", {"implementation": 2}, "lstm"),
}


def _sum_dot(outputs, cotangents):
    return sum(jnp.sum(o * c) for o, c in zip(jax.tree.leaves(outputs), cotangents, strict=True))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("go_backwards", [False, True])
def test_layer_matches_keras_values_and_gradients(kind, go_backwards):
    ours, theirs, extra, weight_kind = KINDS[kind]
    if kind != "simple_rnn":
        extra = {**extra, "recurrent_activation": "sigmoid"}
    options = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    weights = random_weights(weight_kind, N_IN, UNITS, seed=2)
    x = np.random.default_rng(4).normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right" if go_backwards else "holes", B, T)
    init = random_state("lstm" if weight_kind == "lstm" else "gru", B, UNITS)
    with relaxed_numerics():
        # Masks + initial state: Keras' unrolled path is the documented rule (see test_keras_parity).
        keras_extra = {k: v for k, v in extra.items() if k != "implementation"}
        k_layer = getattr(keras.layers, theirs)(UNITS, unroll=True, **keras_extra, **options)
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(weights)
    expected, cot, (k_w, k_x) = keras_reference(k_layer, x, mask=mask, initial_state=init)

    module = ours(UNITS, **extra, **options)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    params = jrnn.linen.set_weights(module, variables["params"], weights)

    def run(params, x):
        return module.apply({"params": params}, x, mask=jnp.asarray(mask), initial_state=init)

    for g, e in zip(run(params, jnp.asarray(x)), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    g_params, g_x = jax.grad(lambda p, x: _sum_dot(run(p, x), cot), argnums=(0, 1))(params, jnp.asarray(x))
    for g, e in zip(jrnn.linen.get_weights(module, g_params), k_w, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_x, k_x, rtol=1e-5, atol=1e-5)


def test_rnn_over_stacked_cells_matches_keras():
    w = random_weights("lstm", N_IN, 4, seed=1) + random_weights("gru_reset_after", 4, 3, seed=2)
    x = np.random.default_rng(0).normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right", B, T)
    with relaxed_numerics():
        k_layer = keras.layers.RNN(
            [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)], return_sequences=True, return_state=True
        )
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(w)
    expected, cot, (k_w, _) = keras_reference(k_layer, x, mask=mask)
    module = jrnn.linen.RNN(
        [
            jrnn.linen.LSTMCell(4, recurrent_activation="sigmoid"),
            jrnn.linen.GRUCell(3, recurrent_activation="sigmoid", reset_after=True),
        ],
        return_sequences=True,
        return_state=True,
    )
    params = jrnn.linen.set_weights(module, module.init(jax.random.key(0), jnp.asarray(x))["params"], w)
    run = lambda p: module.apply({"params": p}, jnp.asarray(x), mask=jnp.asarray(mask))  # noqa: E731
    for g, e in zip(run(params), expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: _sum_dot(run(p), cot))(params)
    for g, e in zip(jrnn.linen.get_weights(module, grads), k_w, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_matches_keras(merge_mode):
    w_f, w_b = (
        random_weights("gru_reset_after", N_IN, UNITS, seed=1),
        random_weights("gru_reset_after", N_IN, UNITS, seed=2),
    )
    x = np.random.default_rng(0).normal(size=(B, T, N_IN)).astype(np.float32)
    mask = make_mask("right", B, T)
    options = dict(return_sequences=True, return_state=True)
    with relaxed_numerics():
        k_layer = keras.layers.Bidirectional(keras.layers.GRU(UNITS, **options), merge_mode=merge_mode)
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(w_f + w_b)
    expected, cot, (k_w, _) = keras_reference(k_layer, x, mask=mask)
    base = jrnn.linen.GRU(UNITS, reset_after=True, recurrent_activation="sigmoid", **options)
    module = jrnn.linen.Bidirectional(base, merge_mode=merge_mode)
    params = module.init(jax.random.key(0), jnp.asarray(x))["params"]
    params = {
        "forward_layer": jrnn.linen.set_weights(base, params["forward_layer"], w_f),
        "backward_layer": jrnn.linen.set_weights(base, params["backward_layer"], w_b),
    }
    run = lambda p: module.apply({"params": p}, jnp.asarray(x), mask=jnp.asarray(mask))  # noqa: E731
    got = run(params)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda p: _sum_dot(run(p), cot))(params)
    ours = jrnn.linen.get_weights(base, grads["forward_layer"]) + jrnn.linen.get_weights(base, grads["backward_layer"])
    for g, e in zip(ours, k_w, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


class MinimalRNNCell(nn.Module):
    """The Keras documentation's example cell, written as a Linen module."""

    units: int

    @property
    def state_size(self):
        return self.units

    @nn.compact
    def __call__(self, inputs, states):
        kernel = self.param("kernel", nn.initializers.normal(0.3), (inputs.shape[-1], self.units))
        recurrent = self.param("recurrent_kernel", nn.initializers.normal(0.3), (self.units, self.units))
        output = inputs @ kernel + states[0] @ recurrent
        return output, [output]


def _minimal_step(p, state, x):
    out = x @ p["kernel"] + state @ p["recurrent_kernel"]
    return out, out


def test_minimal_rnn_cell_alone_and_stacked():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    alone = jrnn.linen.RNN(MinimalRNNCell(32), return_sequences=True)
    variables = alone.init(jax.random.key(1), x)
    p = variables["params"]["cell"]
    expected, _ = jrnn.run(_minimal_step, p, jnp.zeros((B, 32)), x)
    np.testing.assert_allclose(alone.apply(variables, x), expected, rtol=1e-5, atol=1e-5)

    stacked = jrnn.linen.RNN([MinimalRNNCell(32), MinimalRNNCell(64)])
    variables = stacked.init(jax.random.key(2), x)
    ys1, _ = jrnn.run(_minimal_step, variables["params"]["cell_0"], jnp.zeros((B, 32)), x)
    ys2, _ = jrnn.run(_minimal_step, variables["params"]["cell_1"], jnp.zeros((B, 64)), ys1)
    np.testing.assert_allclose(stacked.apply(variables, x), ys2[:, -1], rtol=1e-5, atol=1e-5)


def test_stateful_batches_equal_one_run_and_reset():
    x = jax.random.normal(jax.random.key(0), (B, 2 * T, N_IN))
    module = jrnn.linen.LSTM(UNITS, stateful=True, batch_size=B, return_sequences=True)
    whole = jrnn.linen.LSTM(UNITS, return_sequences=True)
    variables = module.init(jax.random.key(0), x[:, :T])
    params = {"params": variables["params"]}
    y1, mutated = module.apply(variables, x[:, :T], mutable=["carry"])
    y2, mutated = module.apply({**variables, **mutated}, x[:, T:], mutable=["carry"])
    np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), whole.apply(params, x), rtol=1e-5, atol=1e-6)
    reset = jrnn.linen.reset_states({**variables, **mutated})
    jax.tree.map(lambda s: np.testing.assert_array_equal(s, 0.0), reset["carry"])
    h, c = (jnp.asarray(a) for a in random_state("lstm", B, UNITS))
    from_states = jrnn.linen.reset_states(reset, states=[h, c])
    y, _ = module.apply(from_states, x[:, :T], mutable=["carry"])
    np.testing.assert_allclose(y, whole.apply(params, x[:, :T], initial_state=[h, c]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"`mutable` must be to include 'carry' for a stateful layer"):
        module.apply(variables, x[:, :T])
    with pytest.raises(ValueError, match=r"`inputs` must be a batch of 3 for this stateful layer. Received: batch 2"):
        module.apply(variables, x[:2, :T], mutable=["carry"])


def test_regularization_losses_equal_keras_layer_losses():
    weights = random_weights("gru", N_IN, UNITS, seed=5)
    x = np.random.default_rng(1).normal(size=(B, T, N_IN)).astype(np.float32)
    module = jrnn.linen.GRU(
        UNITS,
        recurrent_activation="sigmoid",
        reset_after=False,
        kernel_regularizer="l2",
        recurrent_regularizer=jrnn.regularizers.l1(0.03),
        activity_regularizer=jrnn.regularizers.l2(0.05),
    )
    params = jrnn.linen.set_weights(module, module.init(jax.random.key(0), jnp.asarray(x))["params"], weights)
    _, state = module.apply({"params": params}, jnp.asarray(x), mutable=["losses"])
    total = sum(jax.tree.leaves(state["losses"]))
    with relaxed_numerics():
        k_layer = keras.layers.GRU(
            UNITS,
            reset_after=False,
            kernel_regularizer=keras.regularizers.L2(0.01),
            recurrent_regularizer=keras.regularizers.L1(0.03),
            activity_regularizer=keras.regularizers.L2(0.05),
        )
        k_layer.build((B, T, N_IN))
        k_layer.set_weights(weights)
        k_layer(x)
        expected = float(sum(k_layer.losses))
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)


def test_dropout_uses_the_dropout_stream():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    module = jrnn.linen.LSTM(UNITS, dropout=0.3, recurrent_dropout=0.2)
    variables = module.init(jax.random.key(0), x)
    run = lambda key: module.apply(variables, x, training=True, rngs={"dropout": key})  # noqa: E731
    np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(1)))
    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))
    plain = jrnn.linen.LSTM(UNITS).apply(variables, x)
    np.testing.assert_allclose(module.apply(variables, x), plain, rtol=1e-6)


def test_jit_training_step_with_constraints():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 8, 3)).astype(np.float32))
    target = jnp.asarray(np.cumsum(np.asarray(x)[..., 0], axis=1)[:, -1:] / 4)
    lstm = jrnn.linen.LSTM(16, kernel_constraint=jrnn.constraints.MaxNorm(0.8), recurrent_constraint="non_neg")

    class Model(nn.Module):
        lstm: nn.Module

        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(self.lstm(x))

    model = Model(lstm)
    params = model.init(jax.random.key(0), x)["params"]
    project = lambda p: {**p, "lstm": jrnn.linen.constrain_params(lstm, p["lstm"])}  # noqa: E731
    tx = optax.chain(optax.adam(1e-2), jrnn.layers.projection(project))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p}, x) - target) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
        for _ in range(60):
            params, opt_state, loss = step(params, opt_state)
            losses.append(float(loss))
            cell = params["lstm"]["cell"]
            assert float(jnp.max(jnp.linalg.norm(cell["kernel"], axis=0))) <= 0.8 + 1e-5
            assert float(jnp.min(cell["recurrent_kernel"])) >= 0.0
    assert losses[-1] < 0.5 * losses[0]


def test_bad_input_messages():
    x = jnp.ones((B, T, N_IN))
    with pytest.raises(ValueError, match=r"`batch_size` must be given \(or batch_input_shape\) for a stateful layer"):
        jrnn.linen.GRU(UNITS, stateful=True).init(jax.random.key(0), x)
    module = jrnn.linen.LSTM(UNITS)
    variables = module.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"`initial_state` must be a list of 2 state arrays.*Received: 1 arrays"):
        module.apply(variables, x, initial_state=[jnp.zeros((B, UNITS))])
    with pytest.raises(ValueError, match=r"`merge_mode` must be one of"):
        jrnn.linen.Bidirectional(module, merge_mode="max").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"`mask` must be of shape \(3, 6\) \(batch, time\)"):
        module.apply(variables, x, mask=jnp.ones((B, T - 1), bool))
    with pytest.raises(ValueError, match=r"`constants` must be None for a step that takes no `constants` keyword"):
        rnn = jrnn.linen.RNN(MinimalRNNCell(4))
        rnn.apply(rnn.init(jax.random.key(0), x), x, constants=jnp.ones((B, 2)))


def test_config_round_trip_and_masking():
    module = jrnn.linen.Bidirectional(jrnn.linen.LSTM(UNITS, go_backwards=False, dropout=0.1), merge_mode="mul")
    config = jrnn.linen.get_config(module)
    assert config["layer"]["class_name"] == "LSTM" and config["layer"]["config"]["units"] == UNITS
    again = jrnn.linen.from_config(jrnn.linen.Bidirectional, config)
    assert again == module
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 3)).astype(np.float32)).at[0, 2:].set(0.0)
    masked, mask = jrnn.linen.Masking().apply({}, x)
    np.testing.assert_array_equal(mask, [[True, True, False, False], [True] * 4])
    np.testing.assert_array_equal(masked, x)


def test_bf16_compute_keeps_float32_params():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    module = jrnn.linen.GRU(UNITS, dtype=jnp.bfloat16, return_sequences=True)
    variables = module.init(jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    y = module.apply(variables, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        y.astype(jnp.float32), jrnn.linen.GRU(UNITS, return_sequences=True).apply(variables, x), atol=0.03
    )


def test_constants_reach_a_user_linen_cell():
    class ConstantsCell(nn.Module):
        units: int

        @property
        def state_size(self):
            return self.units

        @nn.compact
        def __call__(self, inputs, states, constants):
            k = self.param("kernel", nn.initializers.normal(0.3), (inputs.shape[-1], self.units))
            kc = self.param("constant_kernel", nn.initializers.normal(0.3), (constants.shape[-1], self.units))
            output = jnp.tanh(inputs @ k + constants @ kc + states[0])
            return output, [output]

    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    c = jax.random.normal(jax.random.key(1), (B, 2))
    module = jrnn.linen.RNN(ConstantsCell(4), return_sequences=True)
    variables = module.init(jax.random.key(2), x, constants=c)
    p = variables["params"]["cell"]

    def step(p, h, x, *, constants):
        out = jnp.tanh(x @ p["kernel"] + constants @ p["constant_kernel"] + h)
        return out, out

    expected, _ = jrnn.run(step, p, jnp.zeros((B, 4)), x, constants=c)
    np.testing.assert_allclose(module.apply(variables, x, constants=c), expected, rtol=1e-5)


def test_stacked_rnn_cells_module_equals_a_list_and_weights_round_trip():
    x = jax.random.normal(jax.random.key(0), (B, T, N_IN))
    listed = jrnn.linen.RNN([jrnn.linen.LSTMCell(4), jrnn.linen.GRUCell(3)], return_state=True)
    stacked = jrnn.linen.RNN(
        jrnn.linen.StackedRNNCells([jrnn.linen.LSTMCell(4), jrnn.linen.GRUCell(3)]), return_state=True
    )
    p_list = listed.init(jax.random.key(0), x)["params"]
    p_stacked = stacked.init(jax.random.key(1), x)["params"]
    p_stacked = jrnn.linen.set_weights(stacked, p_stacked, jrnn.linen.get_weights(listed, p_list))
    for a, b in zip(listed.apply({"params": p_list}, x), stacked.apply({"params": p_stacked}, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_bidirectional_weights_are_forward_then_backward():
    module = jrnn.linen.Bidirectional(jrnn.linen.GRU(UNITS))
    params = module.init(jax.random.key(0), jnp.ones((B, T, N_IN)))["params"]
    weights = jrnn.linen.get_weights(module, params)
    assert len(weights) == 6
    np.testing.assert_array_equal(weights[0], params["forward_layer"]["cell"]["kernel"])
    np.testing.assert_array_equal(weights[3], params["backward_layer"]["cell"]["kernel"])
    swapped = jrnn.linen.set_weights(module, params, weights[3:] + weights[:3])
    np.testing.assert_array_equal(swapped["forward_layer"]["cell"]["kernel"], weights[3])


def test_keras_shape_arguments():
    with pytest.raises(
        ValueError, match=r"`inputs` must be of 3 features \(input_dim\). Received: inputs.shape=\(2, 5, 4\)"
    ):
        jrnn.linen.GRU(UNITS, input_dim=3).init(jax.random.key(0), jnp.ones((2, 5, 4)))
    module = jrnn.linen.GRU(UNITS, stateful=True, batch_input_shape=(2, 5, 3))
    variables = module.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    assert variables["carry"]["states"].h.shape == (2, UNITS)

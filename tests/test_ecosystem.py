"""jrnn with the tools around it: checkpoints (flax.serialization) and data-parallel sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

import jrnn


def _stateful_model(seed):
    return jrnn.nnx.LSTM(6, input_dim=3, stateful=True, batch_size=2, return_sequences=True, rngs=nnx.Rngs(seed))


def test_nnx_checkpoint_round_trip_restores_params_and_stateful_carry(tmp_path):
    xs = jax.random.normal(jax.random.key(0), (2, 8, 3))
    model = _stateful_model(0)
    model(xs[:, :4])  # the carry is now non-zero
    path = tmp_path / "ckpt.msgpack"
    path.write_bytes(serialization.to_bytes(nnx.to_pure_dict(nnx.state(model))))

    restored = _stateful_model(1)  # other weights, zero carry
    state = nnx.state(restored)
    nnx.replace_by_pure_dict(state, serialization.from_bytes(nnx.to_pure_dict(state), path.read_bytes()))
    nnx.update(restored, state)
    np.testing.assert_array_equal(restored.states.get_value().c, model.states.get_value().c)
    np.testing.assert_array_equal(restored(xs[:, 4:]), model(xs[:, 4:]))


def test_linen_checkpoint_round_trip_restores_params_and_carry(tmp_path):
    xs = jax.random.normal(jax.random.key(0), (2, 8, 3))
    module = jrnn.linen.GRU(5, stateful=True, batch_size=2, return_sequences=True)
    variables = module.init(jax.random.key(0), xs)
    _, updated = module.apply(variables, xs[:, :4], mutable=["carry"])
    variables = {**variables, **updated}
    path = tmp_path / "ckpt.msgpack"
    path.write_bytes(serialization.to_bytes(variables))
    template = module.init(jax.random.key(1), xs)
    restored = serialization.from_bytes(template, path.read_bytes())
    want, _ = module.apply(variables, xs[:, 4:], mutable=["carry"])
    got, _ = module.apply(restored, xs[:, 4:], mutable=["carry"])
    np.testing.assert_array_equal(got, want)


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import jrnn

    assert jax.device_count() == 4, jax.devices()
    model = jrnn.nnx.LSTM(16, input_dim=5, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (8, 12, 5))
    target = jax.random.normal(jax.random.key(2), (8, 16))
    mask = jrnn.mask_from_lengths(jnp.array([12, 9, 12, 3, 7, 12, 1, 10]), 12)

    @nnx.jit
    def loss_and_grads(model, xs, mask, target):
        loss = lambda m: jnp.mean((m(xs, mask=mask) - target) ** 2)
        return nnx.value_and_grad(loss)(model)

    loss_1, grads_1 = loss_and_grads(model, xs, mask, target)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch = NamedSharding(mesh, P("data"))
    xs_s, mask_s, target_s = (jax.device_put(a, batch) for a in (xs, mask, target))
    assert len(xs_s.sharding.device_set) == 4
    loss_4, grads_4 = loss_and_grads(model, xs_s, mask_s, target_s)
    np.testing.assert_allclose(loss_4, loss_1, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads_4, grads_1)
    print("sharded ok", float(loss_1))
    """
)


def test_data_parallel_step_over_four_host_devices_matches_one_device():
    # The device count is fixed when JAX starts, so the sharded run gets its own interpreter.
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharded ok" in done.stdout


def test_remat_lowers_the_residual_memory_of_a_long_sequence():
    """T = 20,000 (bench/results/memory.md): with remat the compiled step's temporary buffers stay
    under 32 MiB and a third of remat=False's (XLA's buffer assignment)."""
    cell = jrnn.cells.lstm(32, recurrent_activation="sigmoid")
    params = cell.init_params(jax.random.key(0), 8)
    xs = jnp.zeros((4, 20_000, 8))

    def step_memory(remat):
        loss = lambda p: jnp.sum(jrnn.layers.rnn(cell, p, xs, remat=remat, return_sequences=True).output)  # noqa: E731
        stats = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
        return stats.temp_size_in_bytes

    plain, remat = step_memory(False), step_memory(True)
    assert remat < 32 * 2**20 and 3 * remat < plain, (remat, plain)

"""Properties of jrnn.run over every cell: masking, splitting, reversal, unroll, jit, vmap, grads."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import KINDS, make_cell, make_mask, params_from, random_state, random_weights, to_state
from jax.test_util import check_grads

import jrnn

SIZES = [(1, 1, 1, 1), (3, 7, 5, 6)]  # (batch, time, n_in, units)


def setup(kind, size, dtype=np.float32):
    batch, steps, n_in, units = size
    cell = make_cell(kind, units, recurrent_activation="sigmoid")
    params = params_from(kind, [w.astype(dtype) for w in random_weights(kind, n_in, units)])
    xs = jnp.asarray(np.random.default_rng(5).normal(size=(batch, steps, n_in)).astype(dtype))
    state = to_state(kind, [s.astype(dtype) for s in random_state(kind, batch, units)])
    return cell, params, state, xs


def assert_trees_close(a, b, **kw):
    kw = {"rtol": 1e-6, "atol": 1e-6, **kw}
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


grid = pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
kinds = pytest.mark.parametrize("kind", KINDS)


@kinds
@grid
def test_all_true_mask_is_no_mask(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.ones(xs.shape[:2], bool)
    assert_trees_close(jrnn.run(cell.step, params, state, xs, mask=mask), jrnn.run(cell.step, params, state, xs))


@kinds
@grid
@pytest.mark.parametrize("pattern", ["right", "left", "holes"])
def test_nan_in_masked_steps_never_leaks(kind, size, pattern):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask(pattern, *xs.shape[:2]))
    ys_nan, final_nan = jrnn.run(cell.step, params, state, jnp.where(mask[..., None], xs, jnp.nan), mask=mask)
    ys, final = jrnn.run(cell.step, params, state, jnp.where(mask[..., None], xs, 0.0), mask=mask)
    assert not np.isnan(ys_nan).any()
    assert_trees_close((ys_nan, final_nan), (ys, final), rtol=0, atol=0)


@kinds
@grid
def test_split_run_equals_one_run(kind, size):
    cell, params, state, xs = setup(kind, size)
    ys, final = jrnn.run(cell.step, params, state, xs)
    for k in sorted({0, xs.shape[1] // 2, xs.shape[1]}):
        ys1, mid = jrnn.run(cell.step, params, state, xs[:, :k])
        ys2, end = jrnn.run(cell.step, params, mid, xs[:, k:])
        assert_trees_close((jnp.concatenate([ys1, ys2], axis=1), end), (ys, final))


@kinds
@grid
def test_split_run_with_mask_keeps_state_and_valid_outputs(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))
    ys, final = jrnn.run(cell.step, params, state, xs, mask=mask)
    k = xs.shape[1] // 2
    ys1, mid = jrnn.run(cell.step, params, state, xs[:, :k], mask=mask[:, :k])
    ys2, end = jrnn.run(cell.step, params, mid, xs[:, k:], mask=mask[:, k:])
    assert_trees_close(end, final)
    np.testing.assert_allclose(
        jnp.where(mask[..., None], jnp.concatenate([ys1, ys2], 1), 0), jnp.where(mask[..., None], ys, 0), atol=1e-6
    )


@kinds
@grid
def test_reverse_is_flip_run_flip(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))
    ys, final = jrnn.run(cell.step, params, state, xs, mask=mask, reverse=True)
    ys_f, final_f = jrnn.run(cell.step, params, state, jnp.flip(xs, 1), mask=jnp.flip(mask, 1))
    assert_trees_close((ys, final), (jnp.flip(ys_f, 1), final_f))


@kinds
@grid
def test_every_unroll_agrees(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))
    reference = jrnn.run(cell.step, params, state, xs, mask=mask)
    for unroll in (2, 3, True):
        assert_trees_close(jrnn.run(cell.step, params, state, xs, mask=mask, unroll=unroll), reference)


@kinds
@grid
def test_jit_equals_eager(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask("left", *xs.shape[:2]))
    run = partial(jrnn.run, cell.step)
    assert_trees_close(jax.jit(run)(params, state, xs, mask=mask), run(params, state, xs, mask=mask))


@kinds
@grid
def test_vmap_of_unbatched_sequences_equals_batched(kind, size):
    cell, params, state, xs = setup(kind, size)
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))

    def one(s, x, m):  # an unbatched sequence is time-major: (time, features)
        return jrnn.run(cell.step, params, s, x, mask=m, time_major=True)

    assert_trees_close(jax.vmap(one)(state, xs, mask), jrnn.run(cell.step, params, state, xs, mask=mask))


@kinds
def test_time_major_is_a_transpose(kind):
    cell, params, state, xs = setup(kind, SIZES[1])
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))
    ys_t, final_t = jrnn.run(cell.step, params, state, jnp.swapaxes(xs, 0, 1), mask=mask.T, time_major=True)
    assert_trees_close((jnp.swapaxes(ys_t, 0, 1), final_t), jrnn.run(cell.step, params, state, xs, mask=mask))


@kinds
@pytest.mark.parametrize("size", [(1, 2, 1, 1), (2, 3, 3, 2)], ids=lambda s: "x".join(map(str, s)))
def test_check_grads(kind, size):
    with jax.enable_x64(True):
        cell, params, state, xs = setup(kind, size, np.float64)
        mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))

        def f(params, state, xs):
            ys, final = jrnn.run(cell.step, params, state, xs, mask=mask)
            return ys, final

        check_grads(f, (params, state, xs), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@kinds
def test_remat_same_values_and_gradients(kind):
    cell, params, state, xs = setup(kind, SIZES[1])
    mask = jnp.asarray(make_mask("holes", *xs.shape[:2]))

    def loss(params, state, xs, remat):
        ys, final = jrnn.run(cell.step, params, state, xs, mask=mask, remat=remat)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(s**2) for s in final)

    for argnum in (0, 1, 2):
        g, g_remat = (jax.grad(loss, argnum)(params, state, xs, r) for r in (False, True))
        assert_trees_close(g_remat, g)
    np.testing.assert_allclose(loss(params, state, xs, True), loss(params, state, xs, False), rtol=1e-6)


def test_remat_stores_only_the_carry():
    """Backward memory under remat holds the state per step, not each step's gate activations."""
    cell = jrnn.cells.lstm(64)
    params = cell.init_params(jax.random.key(0), 16)
    xs = jnp.ones((8, 50, 16))

    def residual_bytes(remat):
        f = lambda p: jrnn.run(cell.step, p, cell.init_state((8,)), xs, remat=remat)[0].sum()  # noqa: E731
        _, f_vjp = jax.vjp(f, params)
        return sum(leaf.nbytes for leaf in jax.tree.leaves(f_vjp) if hasattr(leaf, "nbytes"))

    assert residual_bytes(True) < 0.5 * residual_bytes(False)


@kinds
def test_zero_length_sequence_returns_initial_state(kind):
    cell, params, state, xs = setup(kind, SIZES[1])
    for unroll in (1, True):
        ys, final = jrnn.run(cell.step, params, state, xs[:, :0], mask=jnp.ones((3, 0), bool), unroll=unroll)
        assert ys.shape == (3, 0, SIZES[1][3])
        assert_trees_close(final, state, rtol=0, atol=0)


@kinds
@pytest.mark.parametrize("zero_output", [False, True])
def test_fully_masked_row_returns_initial_state_and_zeros(kind, zero_output):
    cell, params, state, xs = setup(kind, SIZES[1])
    mask = jnp.ones(xs.shape[:2], bool).at[1].set(False)
    ys, final = jrnn.run(cell.step, params, state, xs, mask=mask, zero_output_for_mask=zero_output)
    assert not np.isnan(ys).any()
    np.testing.assert_array_equal(ys[1], 0.0)
    jax.tree.map(lambda f, s: np.testing.assert_array_equal(f[1], s[1]), final, state)


@kinds
def test_input_dtype_is_kept(kind):
    cell, params, state, xs = setup(kind, SIZES[1])
    ys, final = jrnn.run(cell.step, params, state, xs.astype(jnp.bfloat16))
    assert ys.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(final))
    np.testing.assert_allclose(ys.astype(jnp.float32), jrnn.run(cell.step, params, state, xs)[0], atol=0.05)


def test_cells_accept_any_leading_batch_dims():
    cell = jrnn.cells.gru(4, reset_after=True)
    params = cell.init_params(jax.random.key(0), 3)
    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    y, state = cell.step(params, cell.init_state((2, 5)), x)
    assert state.h.shape == (2, 5, 4)
    y_flat, _ = cell.step(params, cell.init_state((10,)), x.reshape(10, 3))
    assert y.shape == (2, 5, 4)
    np.testing.assert_allclose(y.reshape(10, 4), y_flat, rtol=1e-6)
    y_one, _ = cell.step(params, cell.init_state(()), x[1, 2])
    np.testing.assert_allclose(y_one, y[1, 2], rtol=1e-6)


def test_constants_reach_the_step_and_stacked_passes_them_on():
    def scaled_step(params, state, x, *, constants):
        h = jnp.tanh(x @ params + state * constants)
        return h, h

    user = jrnn.Cell(
        init_params=lambda key, n, dtype=jnp.float32: jax.random.normal(key, (n, 3), dtype),
        init_state=lambda batch_shape=(), dtype=jnp.float32: jnp.zeros((*batch_shape, 3), dtype),
        step=scaled_step,
    )
    xs = jax.random.normal(jax.random.key(0), (2, 4, 3))
    params = user.init_params(jax.random.key(1), 3)
    c = jnp.full((2, 3), 0.5)
    ys, _ = jrnn.run(user.step, params, user.init_state((2,)), xs, constants=c)
    # The same recurrence written out.
    h, expected = jnp.zeros((2, 3)), []
    for t in range(4):
        h = jnp.tanh(xs[:, t] @ params + h * c)
        expected.append(h)
    np.testing.assert_allclose(ys, jnp.stack(expected, 1), rtol=1e-6)

    stack = jrnn.cells.stacked([jrnn.cells.lstm(3), user])
    s_params = stack.init_params(jax.random.key(2), 3)
    ys_s, _ = jrnn.run(stack.step, s_params, stack.init_state((2,)), xs, constants=c)
    lstm = jrnn.cells.lstm(3)
    lstm_ys, _ = jrnn.run(lstm.step, s_params[0], lstm.init_state((2,)), xs)
    ys_u, _ = jrnn.run(user.step, s_params[1], user.init_state((2,)), lstm_ys, constants=c)
    np.testing.assert_allclose(ys_s, ys_u, rtol=1e-6)

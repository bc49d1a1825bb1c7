"""The Pallas (Mosaic GPU) kernel: in the Mosaic GPU interpreter against jrnn.run, and lowered for CUDA.

CI has no GPU. The interpreter runs the kernel's shared-memory copies, barriers and tensor-core
products on the CPU with race detection; lowering for CUDA checks what the interpreter accepts
but the real compiler would not (TMA box sizes, swizzles, layouts). The kernel's ``h @ U`` has
bf16 operands, so values agree with the float32 scan to bf16 accuracy, not float32's.

On a Hopper GPU the same tests also run the compiled kernels (the ``hopper`` cases, marked
``gpu``), with larger sizes besides: ``make gpu-check`` there. Elsewhere they are skipped.
"""

from __future__ import annotations

import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_mask

import jrnn
from jrnn.kernels import _fused, _pallas

CELLS = {
    "lstm": lambda u, **kw: jrnn.cells.lstm(u, recurrent_activation="sigmoid", **kw),
    "lstm_keras2": lambda u, **kw: jrnn.cells.lstm(u, **kw),  # hard_sigmoid
    "gru": lambda u, **kw: jrnn.cells.gru(u, reset_after=True, recurrent_activation="sigmoid", **kw),
}
# (batch, time, n_in, units): size 1; non-powers of two; two CTAs and two 64-unit blocks per gate.
SIZES = [(1, 1, 1, 1), (3, 7, 5, 6), (20, 4, 3, 70)]
# The products round h and U to bf16 (8 bits of mantissa): ~1e-3 per step at these sizes, and
# 2.6e-3 (values), 1e-3 of the largest gradient at (16, 100, 32, 128), measured in the interpreter.
BF16_PRODUCT_TOL = 5e-3

ON_HOPPER = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _fused._hopper(_fused._device_capability()), reason="needs an NVIDIA Hopper GPU (sm_90)"),
]
# Each test runs the kernels in the interpreter, and compiled on a Hopper GPU where there is one.
RUNS = [pytest.param(True, id="interpret"), pytest.param(False, id="hopper", marks=ON_HOPPER)]
# Tier B (over 128 units) runs on thread-block clusters, which only JAX 0.11's interpreter runs:
# `make test-next` on the CPU. CI's JAX 0.10 lowers these kernels for CUDA but cannot run them.
# That interpreter runs each CTA of a cluster as its own XLA computation, blocking in host callbacks
# at the cluster barrier, so it needs as many XLA CPU threads free as the cluster has CTAs: a 4-CTA
# kernel hangs under `taskset -c 0`, and on 2 CPUs it hung whenever another JAX process ran beside it.
CLUSTER_CPUS = 8


def _cluster_skip_reason():
    if not _pallas.interpreter_runs_clusters():
        return f"JAX {jax.__version__}'s interpreter runs no clusters"
    if len(os.sched_getaffinity(0)) < CLUSTER_CPUS and os.environ.get("JRNN_TEST_CLUSTERS") != "1":
        return (
            f"the interpreter's clusters can deadlock on fewer than {CLUSTER_CPUS} CPUs; "
            "JRNN_TEST_CLUSTERS=1 (and no other JAX process) runs them anyway"
        )
    return None


_CLUSTER_SKIP = _cluster_skip_reason()
CLUSTERS_RUN = pytest.mark.skipif(_CLUSTER_SKIP is not None, reason=str(_CLUSTER_SKIP))
CLUSTER_RUNS = [pytest.param(True, id="interpret", marks=CLUSTERS_RUN), RUNS[1]]


def _setup(kind, size, seed=0, **kw):
    batch, steps, n_in, units = size
    cell = CELLS[kind](units, **kw)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = jax.tree.map(lambda a: 0.3 * jax.random.normal(keys[0], a.shape), cell.init_params(keys[1], n_in))
    # U at the scale of Keras' orthogonal initializer, so that the bf16 error does not grow with units.
    params = params._replace(recurrent_kernel=params.recurrent_kernel * (3.0 / np.sqrt(units)))
    state = jax.tree.map(lambda a: 0.5 * jax.random.normal(keys[2], a.shape), cell.init_state((batch,)))
    xs = jax.random.normal(keys[3], (batch, steps, n_in))
    return cell, params, state, xs


def _loss(fn):
    def loss(*args):
        ys, final = fn(*args)
        weights = jnp.cos(jnp.arange(ys.size, dtype=jnp.float32)).reshape(ys.shape)  # distinct per output
        return jnp.sum(ys * weights) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(final))

    return loss


def _assert_close(got, want, tol):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=tol, rtol=tol), got, want)


def _check(got, ref, args, interpret, tol=BF16_PRODUCT_TOL):
    """``got(*args)`` against ``ref(*args)``: values, then the gradients of ``_loss`` for every argument."""
    argnums = tuple(range(len(args)))
    # On a GPU, XLA's float32 matmuls may use TF32: the reference (and the kernels' input
    # projection) at full float32, so that only the kernels' bf16 products differ.
    with jax.default_matmul_precision("highest"):
        _assert_close(got(*args), ref(*args), tol)
        assert not (interpret and _interpreter_races()), "the Mosaic GPU interpreter detected a race in the forward"
        g_got = jax.grad(_loss(got), argnums)(*args)  # the backward kernel
        assert not (interpret and _interpreter_races()), "the Mosaic GPU interpreter detected a race in the backward"
        g_ref = jax.grad(_loss(ref), argnums)(*args)
    scale = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(g_ref))
    _assert_close(g_got, g_ref, 2 * tol * max(scale, 1.0))


def _compare(cell, params, state, xs, interpret, tol=BF16_PRODUCT_TOL, **kwargs):
    ref = lambda p, s, xs: jrnn.run(cell.step, p, s, xs, **kwargs)  # noqa: E731
    got = lambda p, s, xs: jrnn.kernels.run_fused(cell, p, s, xs, kernel="pallas", interpret=interpret, **kwargs)  # noqa: E731
    _check(got, ref, (params, state, xs), interpret, tol)


def _interpreter_races():
    from jax._src.pallas.mosaic_gpu.interpret import interpret_pallas_call

    return interpret_pallas_call.get_races().races_found


@pytest.mark.parametrize("interpret", RUNS)
@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("pattern, reverse", [(None, False), ("holes", True)])
def test_pallas_matches_the_scan(kind, size, pattern, reverse, interpret):
    _compare_with_mask(kind, size, pattern, reverse, interpret)


def _compare_with_mask(kind, size, pattern, reverse, interpret):
    cell, params, state, xs = _setup(kind, size)
    mask = make_mask(pattern, *xs.shape[:2])
    _compare(cell, params, state, xs, interpret, mask=None if mask is None else jnp.asarray(mask), reverse=reverse)


# Tier B: clusters of 3 (130 and 200 units, padded to 192) and 4 CTAs (256), each CTA 64 units of
# every gate, exchanging h (and, backward, d_rec) through GMEM each step; ~12 s each interpreted.
@pytest.mark.parametrize("interpret", CLUSTER_RUNS)
@pytest.mark.parametrize(
    "kind, size, pattern, reverse",
    [
        ("lstm", (5, 3, 5, 130), "holes", True),
        ("gru", (17, 4, 5, 200), "left", False),
        ("lstm", (3, 3, 5, 256), None, False),
    ],
)
def test_clusters_match_the_scan(kind, size, pattern, reverse, interpret):
    _compare_with_mask(kind, size, pattern, reverse, interpret)


@pytest.mark.parametrize("interpret", CLUSTER_RUNS)
def test_clusters_with_recurrent_dropout_and_two_directions(interpret):
    _, params, state, xs, mask = _two_directions("gru", (3, 3, 4, 150))
    cell = CELLS["gru"](150, recurrent_dropout=0.4, implementation=2)  # the same params, with dropout
    masks = cell.dropout_masks(jax.random.key(9), jax.tree.map(lambda a: a[0], params), (3,))

    def run(path, p, x, m):
        if path == "scan":
            return jrnn.run(partial(cell.step, dropout=masks), p, state, x, mask=m)
        return jrnn.kernels.run_fused(cell, p, state, x, mask=m, dropout=masks, kernel="pallas", interpret=interpret)

    got = lambda p, x: _both_directions(partial(run, "pallas"), p, x, mask)  # noqa: E731
    want = lambda p, x: _both_directions(partial(run, "scan"), p, x, mask)  # noqa: E731
    _check(got, want, (params, xs), interpret)


# Hardware only (the interpreter takes ~30 s per case at these sizes): several CTAs, padded and
# full 128-unit tiles, 100 steps, the benchmark's batch sizes.
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize(
    "size",
    [
        pytest.param(s, marks=ON_HOPPER, id=str(s))
        for s in [(17, 100, 40, 64), (128, 50, 64, 128), (40, 30, 20, 100), (32, 100, 64, 256), (40, 30, 20, 200)]
    ],
)
@pytest.mark.parametrize("pattern, reverse", [(None, False), ("holes", True), ("left", False)])
def test_compiled_kernels_at_larger_sizes(kind, size, pattern, reverse):
    _compare_with_mask(kind, size, pattern, reverse, interpret=False)


@pytest.mark.parametrize("interpret", RUNS)
@pytest.mark.parametrize("pattern", ["right", "left"])
def test_padding_masks(pattern, interpret):
    cell, params, state, xs = _setup("lstm", (5, 6, 3, 9))
    _compare(cell, params, state, xs, interpret, mask=jnp.asarray(make_mask(pattern, 5, 6)))


@pytest.mark.parametrize("interpret", RUNS)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zero_output_time_major_and_no_bias(kind, interpret):
    cell, params, state, xs = _setup(kind, (4, 5, 3, 7), use_bias=False)
    mask = jnp.asarray(make_mask("holes", 4, 5)).T
    xs = jnp.swapaxes(xs, 0, 1)
    _compare(cell, params, state, xs, interpret, mask=mask, time_major=True, zero_output_for_mask=True)


@pytest.mark.parametrize("interpret", RUNS)
def test_bf16_inputs_stay_close_to_float32(interpret):
    cell, params, state, xs = _setup("lstm", (3, 6, 4, 10))
    run = lambda p, s, x: jrnn.kernels.run_fused(cell, p, s, x, kernel="pallas", interpret=interpret)  # noqa: E731
    bf16 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.bfloat16), tree)  # noqa: E731
    ys, final = run(bf16(params), bf16(state), bf16(xs))
    assert ys.dtype == jnp.bfloat16 and final.c.dtype == jnp.bfloat16
    with jax.default_matmul_precision("highest"):
        ref, _ = jrnn.run(cell.step, params, state, xs)
    np.testing.assert_allclose(ys.astype(jnp.float32), ref, atol=3e-2)


@pytest.mark.parametrize("interpret", RUNS)
def test_vmap_over_a_leading_axis(interpret):
    cell, params, state, xs = _setup("gru", (2, 4, 3, 5))
    xs2 = jnp.stack([xs, -xs])
    run = lambda x: jrnn.kernels.run_fused(cell, params, state, x, kernel="pallas", interpret=interpret)  # noqa: E731
    with jax.default_matmul_precision("highest"):
        got = jax.vmap(run)(xs2)
        want = jax.vmap(lambda x: jrnn.run(cell.step, params, state, x))(xs2)
    _assert_close(got, want, BF16_PRODUCT_TOL)


# implementation=2 (Keras 3's only form): one recurrent dropout mask for all gates, on h before h @ U.
@pytest.mark.parametrize("interpret", RUNS)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_dropout_in_the_kernels(kind, interpret):
    cell, params, state, xs = _setup(kind, (18, 6, 5, 70), dropout=0.3, recurrent_dropout=0.4, implementation=2)
    masks = cell.dropout_masks(jax.random.key(9), params, (18,))
    assert masks.recurrent.shape == (1, 18, 70)
    mask = jnp.asarray(make_mask("holes", 18, 6))
    ref = lambda p, s, xs: jrnn.run(partial(cell.step, dropout=masks), p, s, xs, mask=mask, reverse=True)  # noqa: E731
    got = lambda p, s, xs: jrnn.kernels.run_fused(  # noqa: E731
        cell, p, s, xs, mask=mask, reverse=True, dropout=masks, kernel="pallas", interpret=interpret
    )
    _check(got, ref, (params, state, xs), interpret)


def _two_directions(kind, size, seed=0):
    """A Bidirectional's two directions: weights stacked on a leading axis, the mask with holes."""
    cell, p_fwd, state, xs = _setup(kind, size, seed)
    p_bwd = _setup(kind, size, seed + 1)[1]
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), p_fwd, p_bwd)
    return cell, params, state, xs, jnp.asarray(make_mask("holes", *xs.shape[:2]))


def _both_directions(run, params, xs, mask):
    """``run`` over both directions at once: the backward direction reads time-flipped inputs and mask."""
    flip = lambda a: jnp.stack([a, jnp.flip(a, 1)])  # noqa: E731
    ys, final = jax.vmap(run)(params, flip(xs), flip(mask))
    return jnp.concatenate([ys[0], jnp.flip(ys[1], 1)], axis=-1), final


# Directions as a grid axis: under jax.vmap the kernels' launch gains a leading grid axis, so a
# Bidirectional layer's two directions (or any stack of independent recurrences) run in one launch.
@pytest.mark.parametrize("interpret", RUNS)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_both_directions_in_one_vmapped_launch(kind, interpret):
    cell, params, state, xs, mask = _two_directions(kind, (3, 5, 4, 6))

    def got(params, xs):
        run = lambda p, x, m: jrnn.kernels.run_fused(cell, p, state, x, mask=m, kernel="pallas", interpret=interpret)  # noqa: E731
        return _both_directions(run, params, xs, mask)

    def want(params, xs):  # the scans a Bidirectional runs: forward, and go_backwards
        p_fwd, p_bwd = (jax.tree.map(lambda a, i=i: a[i], params) for i in range(2))
        y_f, s_f = jrnn.run(cell.step, p_fwd, state, xs, mask=mask)
        y_b, s_b = jrnn.run(cell.step, p_bwd, state, xs, mask=mask, reverse=True)
        return jnp.concatenate([y_f, y_b], axis=-1), jax.tree.map(lambda a, b: jnp.stack([a, b]), s_f, s_b)

    _check(got, want, (params, xs), interpret)


@pytest.mark.parametrize("interpret", RUNS)
def test_no_time_steps_runs_the_xla_loop(interpret):
    cell, params, state, xs = _setup("lstm", (2, 0, 3, 4))
    ys, final = jrnn.kernels.run_fused(cell, params, state, xs, kernel="pallas", interpret=interpret)
    assert ys.shape == (2, 0, 4)
    _assert_close(final, state, 0.0)


# Lowering for CUDA: every shape bucket (units padded to 64 or 128, with and without a mask, both
# directions, float32 and bf16 inputs) and the backward, on this CPU-only machine.
@pytest.fixture
def hopper(monkeypatch):
    """The dispatch asks the device for sm_90; lowering for CUDA needs no GPU, so it is told so."""
    from jrnn.kernels import _fused

    monkeypatch.setattr(_fused, "_device_capability", lambda: "9.0")


def _cuda_text(fn, params, xs):
    """``fn(params, xs)`` lowered for CUDA, as text."""
    return jax.jit(fn).trace(params, xs).lower(lowering_platforms=("cuda",)).as_text()


def _launches(run, params, xs):
    """Mosaic GPU kernel launches in ``run(params, xs) -> (ys, ...)``, then in its gradient, lowered for CUDA."""
    grad = jax.grad(lambda p, x: jnp.sum(run(p, x)[0].astype(jnp.float32)), (0, 1))
    return tuple(_cuda_text(fn, params, xs).count("stablehlo.custom_call @mosaic_gpu") for fn in (run, grad))


def _cuda_launches(cell, params, state, xs, **kwargs):
    return _launches(lambda p, x: jrnn.kernels.run_fused(cell, p, state, x, kernel="pallas", **kwargs), params, xs)


# Units 5 and 100 are padded (to 64 and 128); 128 leaves the backward one ring slot; 130 and 256
# run on clusters of 3 and 4 CTAs.
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("units", [5, 64, 100, 128, 130, 256])
@pytest.mark.parametrize("masked, reverse, dtype", [(True, False, "float32"), (False, True, "bfloat16")])
def test_lowers_for_cuda(hopper, kind, units, masked, reverse, dtype):
    cell, params, state, xs = _setup(kind, (33, 7, 11, units))
    params, state, xs = jax.tree.map(lambda a: a.astype(dtype), (params, state, xs))
    mask = jnp.asarray(make_mask("holes", 33, 7)) if masked else None
    # The forward kernel; the gradient: the forward kernel, then the backward kernel.
    assert _cuda_launches(cell, params, state, xs, mask=mask, reverse=reverse) == (1, 2)


# The recurrent dropout mask is staged through shared memory the kernels already have: at 128
# units with a time mask the LSTM has no room for another tile.
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("units", [64, 128, 256])
def test_recurrent_dropout_lowers_for_cuda(hopper, kind, units):
    cell, params, state, xs = _setup(kind, (33, 7, 11, units), recurrent_dropout=0.25, implementation=2)
    masks = cell.dropout_masks(jax.random.key(3), params, (33,))
    mask = jnp.asarray(make_mask("holes", 33, 7))
    assert _cuda_launches(cell, params, state, xs, mask=mask, dropout=masks) == (1, 2)


@pytest.mark.parametrize("kind, units", [("lstm", 100), ("gru", 100), ("lstm", 200)])
def test_both_directions_lower_to_one_launch(hopper, kind, units):
    cell, params, state, xs, mask = _two_directions(kind, (33, 7, 11, units))

    kernel = lambda p, x, m: jrnn.kernels.run_fused(cell, p, state, x, mask=m, kernel="pallas")  # noqa: E731
    assert _launches(lambda p, x: _both_directions(kernel, p, x, mask), params, xs) == (1, 2)


# The cluster exchange's memory fences are inline PTX that the interpreter skips: present in the
# lowering of Tier B (two per step, around the cluster barrier), absent from Tier A's.
@pytest.mark.parametrize("units, fences", [(128, 0), (200, 2)])
def test_cluster_exchange_fences_lower_for_cuda(hopper, units, fences):
    cell, params, state, xs = _setup("lstm", (4, 3, 2, units))
    run = lambda p, x: jrnn.kernels.run_fused(cell, p, state, x, kernel="pallas")  # noqa: E731
    assert _cuda_text(run, params, xs).count("fence.acq_rel.cluster") == fences


@pytest.mark.parametrize("activation", sorted(f.__name__ for f in _pallas._LOWERABLE))
def test_every_lowerable_activation_lowers(hopper, activation):
    cell, params, state, xs = _setup(
        "lstm_keras2", (4, 3, 2, 8), activation=activation, recurrent_activation=activation
    )
    assert _cuda_launches(cell, params, state, xs)[1] == 2  # the forward and backward kernels


@pytest.mark.parametrize(
    "cell, units, dropout, reason",
    [
        (jrnn.cells.lstm(257), 257, None, "hidden size 257 exceeds the on-chip limit of 256 units"),
        (jrnn.cells.lstm(8, activation="elu"), 8, None, "activation='elu' has no Mosaic GPU lowering"),
        (jrnn.cells.gru(8), 8, None, "reset_after=False runs on the XLA fused path"),
        (jrnn.cells.simple_rnn(8), 8, None, "LSTM and GRU cells only"),
        (
            jrnn.cells.lstm(8, recurrent_dropout=0.5, implementation=1),
            8,
            "recurrent",
            "per-gate recurrent dropout masks (implementation=1) are not in the Pallas kernel",
        ),
    ],
)
def test_ineligible_configurations_say_why(cell, units, dropout, reason):
    masks = None
    if dropout:
        masks = cell.dropout_masks(jax.random.key(0), cell.init_params(jax.random.key(1), 3), (2,))
    ok, why = jrnn.kernels.choose_kernel(cell, units, "pallas", dropout=masks, interpret=True)
    assert not ok and reason in why


def test_the_cluster_tests_run_from_jax_0_11_on():  # so that they cannot be skipped by mistake
    version = tuple(int(part) for part in jax.__version__.split(".")[:2])
    assert _pallas.interpreter_runs_clusters() == (version >= (0, 11))


def test_an_interpreter_without_clusters_says_so(monkeypatch):
    monkeypatch.setattr(_fused, "interpreter_runs_clusters", lambda: False)
    assert jrnn.kernels.choose_kernel(jrnn.cells.lstm(128), 128, "pallas", interpret=True) == (True, "pallas")
    ok, why = jrnn.kernels.choose_kernel(jrnn.cells.lstm(129), 129, "pallas", interpret=True)
    assert not ok and "hidden size 129 runs on a thread-block cluster, which the Mosaic GPU interpreter" in why


def test_pallas_eligible_takes_a_mask_count():
    config = jrnn.cells.lstm(8).config
    assert _pallas.pallas_eligible(config, 8, recurrent_dropout=1) == (True, "eligible")
    assert not _pallas.pallas_eligible(config, 8, recurrent_dropout=4)[0]
    with pytest.raises(TypeError, match=r"`recurrent_dropout` must be the number of recurrent dropout masks"):
        _pallas.pallas_eligible(config, 8, recurrent_dropout=True)


def test_dispatch_reasons_and_errors():
    cell, params, state, xs = _setup("lstm", (2, 3, 3, 4))
    assert jrnn.kernels.choose_kernel(cell, 4, "xla") == (False, "kernel='xla'")
    ok, why = jrnn.kernels.choose_kernel(cell, 4, "auto")
    assert not ok and ("needs an NVIDIA Hopper GPU" in why or "not measured" in why)
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="kernel='pallas' cannot run here: the Pallas kernel needs an NVIDIA"):
            jrnn.kernels.run_fused(cell, params, state, xs, kernel="pallas")
    with pytest.raises(ValueError, match=r"`kernel` must be 'auto', 'xla' or 'pallas'\. Received: 'cuda'"):
        jrnn.kernels.run_fused(cell, params, state, xs, kernel="cuda")


def test_only_hopper_gpus_run_the_kernel(monkeypatch):
    cell = jrnn.cells.lstm(4)
    monkeypatch.setattr(_fused, "_device_capability", lambda: "10.0")  # Blackwell: no wgmma
    ok, why = jrnn.kernels.choose_kernel(cell, 4, "pallas")
    assert not ok and "needs an NVIDIA Hopper GPU (sm_90)" in why
    monkeypatch.setattr(_fused, "_device_capability", lambda: "9.0")
    assert jrnn.kernels.choose_kernel(cell, 4, "pallas") == (True, "pallas")

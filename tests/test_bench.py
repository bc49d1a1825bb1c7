"""The benchmark scripts nothing else runs work end to end: bench/gpu.py, bench/ab_fused.py and
bench/dispatch.py;
bench/_report.timed_rounds settles each call as bench/cpu.py asks; bench/cpu.py's matmul count
(its GFLOP/s columns) is the products the layer runs; and bench/profile_cpu.py's timeline picks and
orders the operations it lists.

bench/gpu.py must work before a GPU session spends its time on it.

No session has had a GPU since bench/gpu.py was written, so nothing else runs it. Its ``--smoke``
sizes with ``--interpret`` go through every row's code on the CPU, the Pallas kernel's in the
Mosaic GPU interpreter; only the CUDA-only peers (cuDNN through PyTorch and
``jax.experimental.rnn``) are left out, and PyTorch's CPU row where PyTorch (a bench extra) is
not installed. Nothing here is timed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bench_module(name: str):
    """``bench/<name>.py`` as a module, its imports of the other bench/ scripts resolved. Importing
    profile_cpu sets ``XLA_FLAGS`` for its own process; the environment is put back for later tests."""
    xla_flags = os.environ.get("XLA_FLAGS")
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
        if xla_flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = xla_flags
    return module


def _rows(report: str) -> dict[tuple[str, str], list[str]]:
    """``{(section title, implementation): cells}`` from the markdown report."""
    rows, title = {}, None
    for line in report.splitlines():
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("| ") and not line.startswith("| implementation") and title is not None:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[(title, cells[0])] = cells[1:]
    return rows


def test_gpu_benchmark_smoke_runs_every_row_it_can_on_the_cpu():
    # The LSTM section only, to keep CI inside its 15 minutes: the GRU's float64 reference and
    # PyTorch gate reordering run in a full `--smoke` (and a GPU run's error column checks them).
    cmd = [sys.executable, "bench/gpu.py", "--smoke", "--interpret", "--only", "LSTM"]
    cmd += ["--repeats", "1", "--inner", "1", "--out", "-"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(done.stdout)
    (title,) = {t for t, _ in rows}
    assert title.startswith("LSTM"), title
    names = {name for t, name in rows if t == title}
    expected = {"jrnn scan", "jrnn fused (XLA)", "jrnn Pallas (interpreter)"}
    if importlib.util.find_spec("torch") is not None:  # a bench extra, not a test dependency
        expected.add("pytorch CPU float32")
    assert expected <= names, names
    for name in names:
        fwd_ms, per_step, fwd_bwd_ms, _, error = rows[(title, name)]
        assert float(fwd_ms) > 0 and float(fwd_bwd_ms) > 0 and float(per_step) > 0, (title, name)
        # Against the float64 reference: float32 everywhere, except the Pallas kernel's bf16 products.
        assert float(error) < (5e-3 if "Pallas" in name else 1e-5), (title, name, error)
    assert re.search(r"^Device: .*\(cpu\)", done.stdout, re.M)


def test_fused_ab_compares_a_revision_with_the_working_tree():
    """bench/ab_fused.py against HEAD, one round at a tiny size: every row, with numbers."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: bench/ab_fused.py reads the revision's kernels from git")
    cmd = [sys.executable, "bench/ab_fused.py", *"--ref HEAD --sizes 2,3,2,4 --kinds lstm --rounds 1".split()]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| lstm")]
    assert [row[2].strip() for row in rows] == ["fwd", "fwd+bwd"], done.stdout
    for row in rows:
        assert all(float(cell) > 0 for cell in row[3:7]), row


def test_dispatch_times_scan_and_fused_for_every_kind_asked():
    """bench/dispatch.py, one round at a tiny size: a row per mode, each with times and ratios."""
    cmd = [sys.executable, "bench/dispatch.py", *"--kinds simple_rnn,gru_keras2 --sizes 2,3,2,4 --rounds 1".split()]
    done = subprocess.run(
        [*cmd, "--out", "-"], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sections = re.findall(r"^## (\w+)$", done.stdout, flags=re.M)
    assert sections == ["simple_rnn", "gru_keras2"], done.stdout
    rows = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| (2, 3, 2, 4)")]
    assert [row[1].strip() for row in rows] == ["fwd", "fwd+bwd"] * 2, done.stdout
    for row in rows:
        assert float(row[2]) > 0 and float(row[3]) > 0 and re.fullmatch(r"[+-]\d+%", row[4].strip()), row
    bad = subprocess.run([*cmd[:2], "--kinds", "lstm,elman"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--kinds takes simple_rnn" in bad.stderr and "received elman" in bad.stderr


def test_timed_rounds_times_one_call_after_its_settle_calls():
    """bench/cpu.py's ``--settle``: untimed calls of the same implementation before each timed one."""
    _report = _bench_module("_report")
    log = []
    calls = {key: (lambda key=key: log.append(key)) for key in ("a", "b", "c")}
    times = _report.timed_rounds(calls, rounds=4, settle=2)
    assert {key: len(v) for key, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert len(log) == 3 * 4 * 3
    runs = [log[i : i + 3] for i in range(0, len(log), 3)]  # each implementation's calls come in threes
    assert all(len(set(run)) == 1 for run in runs), log


def test_profile_timeline_lists_the_window_in_start_order_with_threads():
    """bench/profile_cpu.py's ``--timeline``: the operations of a window from the trace's middle
    event on, by start time, each with the thread that ran it."""
    profile_cpu = _bench_module("profile_cpu")
    us = 1000  # the trace's times are in nanoseconds
    trace = [
        (0 * us, 5 * us, "early", "pool/1"),
        (30 * us, 2 * us, "dot_b", "pool/2"),
        (10 * us, 4 * us, "dot_a", "pool/1"),
        (20 * us, 1 * us, "gates_a", "pool/1"),
        (60 * us, 1 * us, "late", "pool/2"),
    ]
    rows = profile_cpu._timeline(trace, window_us=25)  # the middle event starts at 20 us
    assert rows[2:] == ["| 0.0 | 1.0 | T0 | `gates_a` |", "| 10.0 | 2.0 | T1 | `dot_b` |"]
    assert profile_cpu._events(trace, runs=1)["dot_a"] == (1, 0.004)


def _dot_flops(jaxpr) -> int:
    """2 x the multiply-adds of every ``dot_general`` in ``jaxpr``, a scan's body once per step."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = 1
            for axis in contract:
                k *= lhs[axis]
            out = 1
            for n in eqn.outvars[0].aval.shape:
                out *= n
            total += 2 * out * k
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _dot_flops(inner) * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
    return total


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cpu_benchmark_counts_the_matmul_work_of_the_layer_it_times(kind):
    """bench/cpu.py's GFLOP/s columns: ``matmul_flops`` against the products in the scan path's
    jaxpr (forward, and gradients of the weights and the input), at sizes with no two alike."""
    import jax
    import jax.numpy as jnp

    import jrnn

    cpu = _bench_module("cpu")
    size = batch, steps, n_in, units = (2, 3, 5, 7)
    cell = cpu._report.cell(kind, units)
    params = cell.init_params(jax.random.key(0), n_in)
    x = jnp.ones((batch, steps, n_in))

    def forward(p, x):
        return jrnn.layers.rnn(cell, p, x, return_sequences=True, use_fused=False).output

    counted = {
        "fwd": _dot_flops(jax.make_jaxpr(forward)(params, x).jaxpr),
        "fwd+bwd": _dot_flops(
            jax.make_jaxpr(jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), (0, 1)))(params, x).jaxpr
        ),
    }
    assert {mode: cpu.matmul_flops(kind, size, mode) for mode in counted} == counted

"""Where the time goes: XLA:CPU's per-operation profile of jrnn's fused LSTM/GRU, by category.

The benchmark (``bench/cpu.py``) says how fast; this says why. It traces a few calls of the
fused path with XLA's per-thunk trace events on and sums the events by operation, then by
category: matmuls inside the time loop (the recurrent one per step, the input projection per
block of steps), matmuls over all steps (weight and input gradients), elementwise fusions (gate
math), and buffer initialisation and copies.
Event times are wall-clock on the thread that ran them; with 2 cores and a thread pool they
overlap a little, so the categories do not add up exactly to the measured time. Each mode also
reports XLA's temporary buffer (one allocation per call) and the page faults and system time
per untraced call: glibc maps an allocation above 32 MiB afresh on every call, page by page
(bench/results/cpu_malloc.md).

``--timeline US`` adds, per mode, every operation of a US-microsecond window from the middle of
the traced calls, in start order with the thread that ran it: how the two lanes' steps interleave,
what waits for what, and the gaps between operations, which the sums above cannot show.

    python bench/profile_cpu.py                        # LSTM and GRU at (32, 128, 128, 256)
    python bench/profile_cpu.py --kind lstm --size 64,256,256,512 --out -
    python bench/profile_cpu.py --kind lstm --timeline 400 --out -
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import platform
import resource
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _report  # bench/ is on the path when a script here runs
import jax
import jax.numpy as jnp

import jrnn

_WRAPPERS = ("ThunkExecutor", "SlinkyThreadPool", "while", "end: ")  # spans that contain other events
_MARKERS = ("ThreadpoolListener",)  # zero-length events of the thread pool


def _category(name: str, calls: int) -> str:
    if "ynn_fusion" in name or "dot" in name:
        if calls > 1:
            return "matmuls in the time loop (h @ U per step; x @ W per 8-step block)"
        return "matmuls over all steps (weight and input gradients)"
    if "broadcast" in name or "copy" in name or "transpose" in name or "update-slice" in name:
        return "buffer init, copies, transposes"
    return "elementwise (gate math) and the rest"


def _trace(fn, args, runs):
    """The operations of an XLA:CPU trace of ``runs`` calls: ``[(start_ns, duration_ns, name, thread)]``."""
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir)
        for _ in range(runs):
            jax.block_until_ready(fn(*args))
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        data = jax.profiler.ProfileData.from_file(path)
    return [
        (event.start_ns, event.duration_ns, event.name, line.name)
        for plane in data.planes
        for line in plane.lines
        if "Eigen" in line.name or "PjRtCpuClient" in line.name
        for event in line.events
        if not event.name.startswith(_WRAPPERS + _MARKERS)
    ]


def _events(trace, runs):
    """``{operation: (calls per run, ms per run)}``."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    for _, duration, name, _ in trace:
        totals[name][0] += 1
        totals[name][1] += duration
    return {name: (n // runs, ns / runs / 1e6) for name, (n, ns) in totals.items()}


def _timeline(trace, window_us):
    """Markdown rows of the operations that start in a ``window_us`` window from the trace's middle
    event on: start (us, from the window's start), duration (us), thread, operation."""
    ops = sorted(trace)
    start = ops[len(ops) // 2][0]
    threads = {}
    rows = ["| start, us | us | thread | operation |", "|---|---|---|---|"]
    for begin, duration, name, line in ops:
        if start <= begin < start + window_us * 1e3:
            thread = threads.setdefault(line, f"T{len(threads)}")
            rows.append(f"| {(begin - start) / 1e3:.1f} | {duration / 1e3:.1f} | {thread} | `{name}` |")
    return rows


def profile(kind, size, runs, top=8, timeline_us=0):
    batch, steps, n_in, units = size
    cell = _report.cell(kind, units)
    params = cell.init_params(jax.random.key(0), n_in)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, n_in))
    state = cell.init_state((batch,))

    def forward(p, x):
        return jrnn.kernels.run_fused(cell, p, state, x)[0]

    modes = {
        "fwd": jax.jit(forward),
        "fwd+bwd": jax.jit(jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), (0, 1))),
    }
    lines = []
    for mode, fn in modes.items():
        for _ in range(3):
            jax.block_until_ready(fn(params, xs))
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for _ in range(runs):
            jax.block_until_ready(fn(params, xs))
        wall = (time.perf_counter() - start) / runs * 1e3
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults = (after.ru_minflt - before.ru_minflt) / runs
        system = (after.ru_stime - before.ru_stime) / runs * 1e3
        temp = fn.lower(params, xs).compile().memory_analysis().temp_size_in_bytes / 2**20
        trace = _trace(fn, (params, xs), runs)
        events = _events(trace, runs)
        by_category = collections.defaultdict(float)
        for name, (calls, ms) in events.items():
            by_category[_category(name, calls)] += ms
        lines += [f"### {kind.upper()} {size}, {mode}: {wall:.1f} ms per call (untraced)", ""]
        lines += [
            f"XLA temporary buffer {temp:.1f} MiB; per call {faults:.0f} minor page faults, {system:.1f} ms of "
            "system time (all threads)",
            "",
        ]
        lines += ["| category | ms per call |", "|---|---|"]
        lines += [f"| {c} | {ms:.1f} |" for c, ms in sorted(by_category.items(), key=lambda kv: -kv[1])]
        lines += ["", "| operation | calls | ms per call | us per event |", "|---|---|---|---|"]
        slowest = sorted(events.items(), key=lambda kv: -kv[1][1])[:top]
        lines += [
            f"| `{name}` | {calls} | {ms:.2f} | {ms * 1e3 / max(calls, 1):.1f} |" for name, (calls, ms) in slowest
        ]
        lines.append("")
        if timeline_us:
            lines += [f"Timeline: the operations of {timeline_us} us from the middle of the trace.", ""]
            lines += [*_timeline(trace, timeline_us), ""]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=[*_report.KINDS, "both"], default="both", help="both: lstm and gru")
    parser.add_argument("--size", default="32,128,128,256", help="batch,time,input,units")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=8, help="operations listed per mode, slowest first")
    parser.add_argument("--timeline", type=int, default=0, metavar="US", help="list every operation of US us")
    parser.add_argument("--out", default="bench/results/cpu_profile.md", help="'-' prints only")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    kinds = ["lstm", "gru"] if args.kind == "both" else [args.kind]
    lines = [
        "# Where the time goes: XLA:CPU profile of jrnn's fused path",
        "",
        f"Command: `python bench/profile_cpu.py --kind {args.kind} --size {args.size} --runs {args.runs}"
        + (f" --timeline {args.timeline}`" if args.timeline else "`"),
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"Versions: jax {jax.__version__}, jrnn {jrnn.__version__}",
        f"Git: {_report.git_head()}",
        f"MALLOC_MMAP_THRESHOLD_: {os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset')}",
        "",
    ]
    for kind in kinds:
        lines += profile(kind, size, args.runs, args.top, args.timeline)
    _report.write(lines, args.out)


if __name__ == "__main__":
    main()

"""Where ``use_fused='auto'`` should run the fused path: jrnn's scan against its fused path, on CPU.

``jrnn.kernels.choose`` sends every eligible SimpleRNN, GRU and LSTM on the CPU to the fused path.
``bench/cpu.py`` measures that choice at the issue's three sizes, for the Keras-3 LSTM and GRU
(sigmoid, reset_after=True), whose gate gradients have a closed form. This script measures it
over a grid of other sizes (batch 1, short and long sequences, tiny and wide layers) and for every
kind the fused path runs: SimpleRNN, and jrnn's own defaults, the Keras-2 LSTM and GRU
(hard_sigmoid; the GRU reset_after=False, with a second recurrent product per step), whose
backward gets its gate gradients from ``jax.vjp``.

Both paths go through the public layer function (``jrnn.layers.rnn(..., use_fused=False|True)``),
forward (return_sequences) and forward+backward (gradients of a sum of squares with respect to the
weights and the input), each compiled twice: the spread between two copies of the same program
(``scan2 vs scan``, ``fused2 vs fused``) is the noise a difference has to beat. The four programs of
a mode run in a new random order every round, each timed call after one untimed call of its own.

    python bench/dispatch.py                                  # the grid, writes bench/results/dispatch.md
    python bench/dispatch.py --kinds gru --sizes 1,1000,16,64 --rounds 11 --out -
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _report  # bench/ is on the path when a script here runs
import jax
import jax.numpy as jnp
import numpy as np

import jrnn

# (batch, time, input, units): batch 1 (inference, streaming), short sequences, tiny and wide
# layers, non-powers of two; and bench/cpu.py's smallest size, for reference.
SIZES = [
    (1, 100, 8, 16),
    (1, 1000, 16, 64),
    (4, 5, 8, 16),
    (16, 64, 32, 64),
    (32, 20, 64, 128),
    (64, 30, 40, 100),
    (128, 16, 8, 8),
    (2, 300, 3, 200),
]
KINDS = ("simple_rnn", "lstm", "gru", "lstm_keras2", "gru_keras2")  # _report.cell's, in report order
PATHS = ("scan", "scan2", "fused", "fused2")


def programs(kind, size):
    """``{(path, mode): call}``, every call compiled (not yet run) and blocking until done."""
    _, _, n_in, units = size
    c = _report.cell(kind, units)
    params = c.init_params(jax.random.key(0), n_in)
    x = jnp.asarray(np.random.default_rng(0).normal(size=size[:3]).astype(np.float32))
    calls = {}
    for path in PATHS:
        fused = path.startswith("fused")

        def forward(p, x, fused=fused):
            return jrnn.layers.rnn(c, p, x, return_sequences=True, use_fused=fused).output

        fwd = jax.jit(forward).lower(params, x).compile()
        grad = jax.jit(jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2), argnums=(0, 1)))
        grad = grad.lower(params, x).compile()
        calls[path, "fwd"] = lambda f=fwd: jax.block_until_ready(f(params, x))
        calls[path, "fwd+bwd"] = lambda f=grad: jax.block_until_ready(f(params, x))
    return calls


def measure(kind, size, rounds):
    """``{(path, mode): median ms}``; the two modes timed apart, each in shuffled rounds."""
    calls = programs(kind, size)
    medians = {}
    for mode in ("fwd", "fwd+bwd"):
        mode_calls = {key: call for key, call in calls.items() if key[1] == mode}
        for call in mode_calls.values():  # a first run of each, outside the timing
            call()
        times = _report.timed_rounds(mode_calls, rounds, settle=1)
        medians.update({key: statistics.median(v) * 1e3 for key, v in times.items()})
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", help="batch,time,input,units (default: the grid above)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--out", default="bench/results/dispatch.md", help="markdown file, or - for stdout")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"--kinds takes {', '.join(KINDS)}; received {', '.join(unknown)}")
    lines = [
        "# Scan against fused on CPU: where `use_fused='auto'` should go",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}` (from the repository root, in `.venv`)",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"Versions: jax {jax.__version__}, jrnn {jrnn.__version__}, python {platform.python_version()}",
        f"Git: {_report.git_head()}",
        "",
        f"Median milliseconds of {args.rounds} shuffled rounds per mode; each program compiled twice "
        "(`scan`, `scan2`; `fused`, `fused2`). `fused / scan` compares the means of the two copies; "
        "the two `A/A` columns are each path's copy against the other, the noise.",
        "",
    ]
    for kind in kinds:
        lines += [
            f"## {kind}",
            "",
            "| (batch, time, input, units) | mode | scan | fused | fused / scan | A/A scan | A/A fused |",
            "|---|---|---|---|---|---|---|",
        ]
        for size in sizes:
            print(f"{kind} {size}", file=sys.stderr, flush=True)
            ms = measure(kind, size, args.rounds)
            for mode in ("fwd", "fwd+bwd"):
                s, s2, f, f2 = (ms[path, mode] for path in PATHS)
                ratio = (f + f2) / (s + s2) - 1
                lines.append(
                    f"| {size} | {mode} | {s:.3f} | {f:.3f} | {ratio:+.0%} | {s2 / s - 1:+.0%} | {f2 / f - 1:+.0%} |"
                )
        lines.append("")
    _report.write(lines, args.out)


if __name__ == "__main__":
    main()

"""A/B of the fused path: a git revision's kernels (A) against the working tree's (B), in one process.

For a change to the XLA fused path, ``jrnn/kernels/_engine.py`` and ``_fused.py``: both are taken
from the revision as modules of their own (the rest of jrnn is the working tree's), and each side
is compiled twice (A, A2, B, B2), so that the spread between two copies of the same code shows the
noise a difference has to beat. The four run in a new random order every round: with a fixed
order, the one run second looked 8-9% faster whatever it was (``bench/cpu.py``'s docstring).
Times are medians in milliseconds of the layer's forward and forward+backward, as in
``bench/cpu.py``, with the cells of ``_report.KINDS`` (default: the LSTM and GRU ``bench/cpu.py`` times).

    python bench/ab_fused.py --ref HEAD --sizes 16,64,32,64 32,128,128,256 --rounds 41
    python bench/ab_fused.py --ref HEAD~3 --kinds lstm --sizes 64,256,256,512 --rounds 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import types

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _report  # bench/ is on the path when a script here runs
import jax
import jax.numpy as jnp

from jrnn.kernels import _fused


def revision_kernels(ref: str) -> types.ModuleType:
    """``jrnn.kernels._fused`` as it was at ``ref``, on that revision's ``_engine``."""

    def source(path):
        return subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True, check=True).stdout

    modules = {}
    for name, path in (("_ab_engine", "jrnn/kernels/_engine.py"), ("_ab_fused", "jrnn/kernels/_fused.py")):
        module = types.ModuleType(name)
        module.__file__ = f"{ref}:{path}"
        sys.modules[name] = module  # dataclasses and NamedTuples look their module up
        text = source(path).replace("from jrnn.kernels._engine import", "from _ab_engine import")
        exec(compile(text, module.__file__, "exec"), module.__dict__)
        modules[name] = module
    return modules["_ab_fused"]


def compare(kind, size, sides, rounds):
    """``{(side, mode): median ms}`` for ``sides`` ``{name: fused module}``, interleaved in shuffled rounds."""
    batch, steps, n_in, units = size
    cell = _report.cell(kind, units)
    params = cell.init_params(jax.random.key(0), n_in)
    xs = jax.random.normal(jax.random.key(1), (batch, steps, n_in))
    state = cell.init_state((batch,))
    fns = {}
    for name, module in sides.items():

        def forward(p, x, module=module):
            return module.run_fused(cell, p, state, x)[0]

        fns[name, "fwd"] = jax.jit(forward)
        fns[name, "fwd+bwd"] = jax.jit(jax.grad(lambda p, x, f=forward: jnp.sum(f(p, x) ** 2), (0, 1)))
    calls = {key: (lambda fn=fn: jax.block_until_ready(fn(params, xs))) for key, fn in fns.items()}
    for call in calls.values():  # compile
        call()
    times = _report.timed_rounds(calls, rounds)
    return {key: statistics.median(v) * 1e3 for key, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="HEAD", help="the git revision to compare with (A)")
    parser.add_argument("--sizes", nargs="+", default=["16,64,32,64", "32,128,128,256"], help="batch,time,input,units")
    parser.add_argument("--kinds", nargs="+", choices=_report.KINDS, default=["lstm", "gru"])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    old = revision_kernels(args.ref)
    sides = {"A": old, "A2": old, "B": _fused, "B2": _fused}
    print(f"A: {args.ref} ({_report.git_head()} is HEAD), B: the working tree; median ms of {args.rounds} rounds")
    print("| kind | size | mode | A | A2 | B | B2 | B vs A | A2 vs A |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for text in args.sizes:
            size = tuple(int(v) for v in text.split(","))
            ms = compare(kind, size, sides, args.rounds)
            for mode in ("fwd", "fwd+bwd"):
                a, a2, b, b2 = (ms[side, mode] for side in sides)
                change = (b + b2) / (a + a2) - 1
                row = f"| {kind} | {size} | {mode} | {a:.2f} | {a2:.2f} | {b:.2f} | {b2:.2f}"
                print(f"{row} | {change:+.1%} | {a2 / a - 1:+.1%} |", flush=True)


if __name__ == "__main__":
    main()

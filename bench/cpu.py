"""Side-by-side CPU benchmark of LSTM/GRU layers: jrnn (scan, fused) against the peers.

Peers: Flax ``nn.RNN`` (OptimizedLSTMCell / GRUCell), Keras 3 on JAX, Equinox cells under
``lax.scan``, and PyTorch CPU ``nn.LSTM`` / ``nn.GRU``. Every implementation computes the same
layer (tanh/sigmoid, return_sequences), forward and forward+backward (gradients of a sum of
squares with respect to the weights and the input). Runs are interleaved across implementations,
in a new random order every round, and medians reported; first-call time is trace + compile + one
run. The order matters: of two jrnn forwards that measure the same in shuffled rounds, the one run
second in fixed rounds looked 8-9% faster, whichever it was (at (32, 128, 128, 256); their
forward+backward, run after them, 3-5% slower). Allocations reusing the previous run's freed
pages is the likely cause (bench/results/cpu_malloc.md).

Each timed call follows one untimed call of the same implementation (``--settle``). PyTorch's
OpenMP threads (libgomp) spin for a while after each parallel region, and on two cores they took
the CPU from whichever JAX program ran next: jrnn's LSTM forward at (32, 128, 128, 256) took 27-29
ms right after PyTorch calls against 19-22 ms after its own, while PyTorch's own time did not
change (17.6-19.8 ms; with ``GOMP_SPINCOUNT=10000`` jrnn's 21.1 came back and PyTorch kept 18.2).
The untimed call absorbs that, and wakes a thread pool that has gone idle, for every implementation
alike: each is timed as in a loop of its own calls (bench/results/cpu.md).

    python bench/cpu.py                     # the issue's three sizes, writes bench/results/cpu.md
    python bench/cpu.py --sizes 16,64,32,64 --repeats 5 --out -
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import _report  # bench/ is on the path when a script here runs
import jax
import jax.numpy as jnp
import numpy as np

import jrnn

SIZES = [(16, 64, 32, 64), (32, 128, 128, 256), (64, 256, 256, 512)]  # (batch, time, input, units)


def _sum_sq(y):
    return jnp.sum(y * y)


def jrnn_impl(kind, size, use_fused):
    _, _, n_in, units = size
    cell = _report.cell(kind, units)
    params = cell.init_params(jax.random.key(0), n_in)

    def forward(params, x):
        return jrnn.layers.rnn(cell, params, x, return_sequences=True, use_fused=use_fused).output

    return _jax_pair(forward, params)


def flax_impl(kind, size):
    from flax import linen as nn

    batch, steps, n_in, units = size
    cell = nn.OptimizedLSTMCell(units) if kind == "lstm" else nn.GRUCell(units)
    module = nn.RNN(cell)
    params = module.init(jax.random.key(0), jnp.zeros((batch, steps, n_in)))
    return _jax_pair(module.apply, params)


def keras_impl(kind, size):
    import keras

    batch, steps, n_in, units = size
    layer = (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(units, return_sequences=True)
    layer.build((batch, steps, n_in))
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def forward(weights, x):
        return layer.stateless_call(weights, frozen, x)[0]

    return _jax_pair(forward, trainable)


def equinox_impl(kind, size):
    import equinox as eqx

    _, _, n_in, units = size
    cell = (eqx.nn.LSTMCell if kind == "lstm" else eqx.nn.GRUCell)(n_in, units, key=jax.random.key(0))

    def forward(cell, x):
        def one(seq):
            h = jnp.zeros(units)
            carry = (h, h) if kind == "lstm" else h

            def step(carry, x_t):
                carry = cell(x_t, carry)
                return carry, carry[0] if kind == "lstm" else carry

            return jax.lax.scan(step, carry, seq)[1]

        return jax.vmap(one)(x)

    return _jax_pair(forward, cell, eqx=True)


def _jax_pair(forward, params, eqx=False):
    if eqx:
        import equinox

        fwd = equinox.filter_jit(forward)
        grad = equinox.filter_jit(equinox.filter_grad(lambda p, x: _sum_sq(forward(p, x))))
        return (lambda x: fwd(params, x)), (lambda x: grad(params, x))
    fwd = jax.jit(forward)
    grad = jax.jit(jax.grad(lambda p, x: _sum_sq(forward(p, x)), argnums=(0, 1)))
    return (lambda x: fwd(params, x)), (lambda x: grad(params, x))


def torch_impl(kind, size):
    import torch

    _, _, n_in, units = size
    torch.manual_seed(0)
    layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(n_in, units, batch_first=True)

    def forward(x):
        with torch.no_grad():
            return layer(x)[0]

    def forward_backward(x):
        x = x.detach().requires_grad_(True)
        layer.zero_grad()
        (layer(x)[0] ** 2).sum().backward()
        return x.grad

    return forward, forward_backward


IMPLS = {
    "jrnn scan": lambda k, s: jrnn_impl(k, s, False),
    "jrnn fused": lambda k, s: jrnn_impl(k, s, True),
    "flax nn.RNN": flax_impl,
    "keras 3 (jax)": keras_impl,
    "equinox": equinox_impl,
    "pytorch": torch_impl,
}


_GATES = {"lstm": 4, "gru": 3}


def matmul_flops(kind, size, mode):
    """The layer's matmul work in floating-point operations (2 per multiply-add), elementwise left out.

    Forward: the input and recurrent projections, ``2 B T (input + units) G units`` with G gates
    (LSTM 4, GRU 3). The backward has two products of the same size per forward one (a weight
    gradient and an input or state gradient), so forward+backward is 3x the forward: a ratio of
    fwd+bwd / fwd above 3 is time the backward spends at a lower rate than the forward.
    """
    batch, steps, n_in, units = size
    forward = 2 * batch * steps * (n_in + units) * _GATES[kind] * units
    return forward if mode == "fwd" else 3 * forward


def matmul_rates(repeats):
    """GFLOP/s of one large float32 matmul, (1024, 512) x (512, 2048), in XLA:CPU and in PyTorch:
    a reference rate for the table's products on this machine (not a bound: XLA reached ~193 GFLOP/s
    on other shapes here)."""
    import torch

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=shape).astype(np.float32) for shape in ((1024, 512), (512, 2048)))
    xla = jax.jit(jnp.matmul)
    ja, jb, ta, tb = jnp.asarray(a), jnp.asarray(b), torch.from_numpy(a), torch.from_numpy(b)
    calls = {"xla": lambda: jax.block_until_ready(xla(ja, jb)), "pytorch": lambda: torch.mm(ta, tb)}
    for call in calls.values():
        call()
    times = _report.timed_rounds(calls, repeats, settle=1)
    flops = 2 * 1024 * 512 * 2048
    return {name: flops / statistics.median(v) / 1e9 for name, v in times.items()}


def _block(out):
    jax.block_until_ready(out) if not hasattr(out, "detach") else out


def bench(kind, size, repeats, settle=1):
    rng = np.random.default_rng(0)
    x_np = rng.normal(size=size[:3]).astype(np.float32)
    inputs = {}
    fns, first = {}, {}
    for name, make in IMPLS.items():
        try:
            fwd, fwd_bwd = make(kind, size)
        except ImportError as e:  # a peer that is not installed is reported, not fatal
            print(f"  skip {name}: {e}", file=sys.stderr)
            continue
        if name == "pytorch":
            import torch

            inputs[name] = torch.from_numpy(x_np)
        else:
            inputs[name] = jnp.asarray(x_np)
        for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            start = time.perf_counter()
            _block(fn(inputs[name]))
            first[(name, mode)] = time.perf_counter() - start
            fns[(name, mode)] = fn
    # Interleaved, so that every implementation sees the same machine state, in shuffled rounds.
    calls = {key: (lambda fn=fn, x=inputs[key[0]]: _block(fn(x))) for key, fn in fns.items()}
    times = _report.timed_rounds(calls, repeats, settle)
    return {key: (statistics.median(v), first[key]) for key, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", help="batch,time,input,units (default: the issue's three sizes)")
    parser.add_argument("--kinds", default="lstm,gru")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--settle", type=int, default=1, help="untimed calls before each timed one")
    parser.add_argument("--out", default="bench/results/cpu.md", help="markdown file, or - for stdout")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split(",")) for s in args.sizes] if args.sizes else SIZES
    import torch

    lines = [
        "# CPU benchmark: LSTM/GRU layers, jrnn against the peers",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}` (from the repository root, in `.venv`)",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"Versions: jax {jax.__version__}, jrnn {jrnn.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), python {platform.python_version()}",
        f"Git: {_report.git_head()}",
        "",
        f"Median of {args.repeats} runs, interleaved in a shuffled order, each after {args.settle} untimed "
        "call(s) of the same implementation, milliseconds; first call (trace + compile + run) in brackets.",
        "GFLOP/s: the layer's matmul work (`matmul_flops`: 2 B T (input + units) G units for the forward, "
        "3x that for forward+backward, elementwise work left out) over the median time.",
        "",
    ]
    rates = matmul_rates(args.repeats)
    lines += [
        "One large float32 matmul, (1024, 512) x (512, 2048), for scale: "
        + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items())
        + ".",
        "",
    ]
    for kind in args.kinds.split(","):
        for size in sizes:
            print(f"{kind} {size}", file=sys.stderr)
            results = bench(kind, size, args.repeats, args.settle)
            lines += [
                f"## {kind.upper()} (batch, time, input, units) = {size}",
                "",
                "| implementation | fwd | fwd+bwd | fwd+bwd / fwd | GFLOP/s fwd | GFLOP/s fwd+bwd |",
                "|---|---|---|---|---|---|",
            ]
            flops = {mode: matmul_flops(kind, size, mode) / 1e9 for mode in ("fwd", "fwd+bwd")}
            for name in IMPLS:
                if (name, "fwd") not in results:
                    continue
                (f, f0), (b, b0) = results[(name, "fwd")], results[(name, "fwd+bwd")]
                lines.append(
                    f"| {name} | {1e3 * f:.1f} [{f0:.1f} s] | {1e3 * b:.1f} [{b0:.1f} s] | {b / f:.2f} "
                    f"| {flops['fwd'] / f:.0f} | {flops['fwd+bwd'] / b:.0f} |"
                )
            lines.append("")
    _report.write(lines, args.out)


if __name__ == "__main__":
    main()

"""GPU benchmark of LSTM/GRU layers: jrnn (scan, XLA fused, Pallas) against cuDNN, on one device.

Peers: PyTorch ``nn.LSTM`` / ``nn.GRU`` on cuDNN (fp16 and bf16) and ``jax.experimental.rnn.lstm``
(cuDNN through XLA, fp32). Every implementation gets the same weights (jrnn's Keras layout,
converted) and the same input; forward and forward+backward (gradients of a sum of squares with
respect to the weights and the input). Reported per configuration: median milliseconds after
warm-up, microseconds per step, peak memory, and the largest error of the forward output against
a float64 NumPy reference.

Timing: PyTorch with CUDA events; JAX with wall time around ``block_until_ready`` over a batch of
calls (no device-event API; dispatch is amortised over the batch). Peak memory: PyTorch's
``max_memory_allocated``; JAX's compiled temporary + output bytes (``memory_analysis``).

    python bench/gpu.py                   # the issue's matrix, writes bench/results/gpu.md
    python bench/gpu.py --smoke --out -   # tiny sizes, any backend: checks that the script runs
    python bench/gpu.py --smoke --interpret --repeats 1 --inner 1 --out -   # and the Pallas row, on CPU
    python bench/gpu.py --only 'H=(64|128) ' --out $OUT/gpu_small.md   # the sections matching a regex

The file is rewritten after every section, so a run stopped at a time limit keeps what it measured.

The Pallas row runs ``jrnn.kernels.run_fused(..., kernel="pallas")`` where ``choose_kernel`` allows
it (NVIDIA Hopper, units <= 256); elsewhere the script prints the reason and leaves the row out.
``--interpret`` runs that row in the Mosaic GPU interpreter instead, on any backend: slowly, to
check the script's Pallas path before a GPU session spends its time on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time

# JAX would otherwise take 75% of the GPU's memory at its first call, leaving PyTorch the rest.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import _report  # bench/ is on the path when a script here runs
import jax
import jax.numpy as jnp
import numpy as np

import jrnn

# (kind, batch, time, input, units, dtype, training). The matrix.
MATRIX = (
    [("lstm", 16, 1024, 768, 768, "bfloat16", True)]
    + [
        (k, b, t, h, h, "float32", True)
        for k in ("lstm", "gru")
        for h in (64, 128)
        for b in (32, 128)
        for t in (100, 1000)
    ]
    + [("lstm", b, 500, h, h, "float32", True) for h in (256, 512, 1024) for b in (32, 64)]
    + [("lstm", 1, 1000, h, h, "float32", False) for h in (256, 1024)]
)
SMOKE = [("lstm", 4, 12, 8, 16, "float32", True), ("gru", 4, 12, 8, 16, "float32", True)]


def make_weights(kind, n_in, units, seed=0):
    """Gate-distinct random weights in jrnn's Keras layout (tanh / sigmoid, reset-after GRU)."""
    cell = _report.cell(kind, units)
    params = cell.init_params(jax.random.key(seed), n_in)
    bias = jax.random.uniform(jax.random.key(seed + 1), params.bias.shape, minval=-0.5, maxval=0.5)
    return cell, params._replace(bias=bias)


def reference(kind, params, x):
    """Float64 NumPy forward, the outputs of every step: ``(batch, time, units)``."""
    w, u, b = (np.asarray(a, np.float64) for a in params)
    x = np.asarray(x, np.float64)
    units = u.shape[0]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    ys = []
    for t in range(x.shape[1]):
        if kind == "lstm":
            i, f, g, o = np.split(x[:, t] @ w + h @ u + b, 4, axis=-1)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(c)
        else:
            xz, xr, xh = np.split(x[:, t] @ w + b[0], 3, axis=-1)
            hz, hr, hh = np.split(h @ u + b[1], 3, axis=-1)
            z, r = sig(xz + hz), sig(xr + hr)
            h = z * h + (1 - z) * np.tanh(xh + r * hh)
        ys.append(h)
    return np.stack(ys, axis=1)


def _jax_timer(fn, args, repeats, inner):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def _jax_memory(fn, args):
    try:
        stats = jax.jit(fn).lower(*args).compile().memory_analysis()
        return stats.temp_size_in_bytes + stats.output_size_in_bytes
    except Exception:  # a backend without memory analysis
        return float("nan")


def jrnn_impl(kind, params, cell, dtype, use_fused):
    def forward(params, x):
        return jrnn.layers.rnn(cell, params, x, return_sequences=True, use_fused=use_fused).output

    p = jax.tree.map(lambda a: a.astype(dtype), params)
    return forward, p


def pallas_impl(kind, params, cell, dtype, units, interpret=False):
    """The persistent Pallas kernel through ``run_fused``; ``None`` (with the reason) where it cannot run."""
    ok, reason = jrnn.kernels.choose_kernel(cell, units, "pallas", interpret=interpret)
    if not ok:
        print(f"  skip jrnn Pallas: {reason}", file=sys.stderr)
        return None

    def forward(params, x):
        state = jax.tree.map(lambda a: a.astype(x.dtype), cell.init_state(x.shape[:1]))
        return jrnn.kernels.run_fused(cell, params, state, x, kernel="pallas", interpret=interpret)[0]

    return forward, jax.tree.map(lambda a: a.astype(dtype), params)


def jax_cudnn_impl(kind, params, dtype):
    """``jax.experimental.rnn.lstm``: cuDNN's flat weights (W_ih, W_hh, b_ih, b_hh; gates i, f, g, o)."""
    if kind != "lstm" or jax.default_backend() != "gpu":
        return None
    from jax.experimental import rnn

    w, u, b = params
    n_in, units = w.shape[0], u.shape[0]
    flat = jnp.concatenate([w.T.ravel(), u.T.ravel(), b, jnp.zeros_like(b)]).astype(dtype)

    def forward(flat, x):
        batch = x.shape[0]
        zeros = jnp.zeros((1, batch, units), x.dtype)
        lengths = jnp.full((batch,), x.shape[1], jnp.int32)
        return rnn.lstm(x, zeros, zeros, flat, lengths, n_in, units, 1, 0.0, False)[0]

    return forward, flat


def torch_impl(kind, params, dtype):
    """PyTorch ``nn.LSTM`` / ``nn.GRU`` (cuDNN on a GPU) with the same weights."""
    import torch

    w, u, b = (np.array(a, np.float32) for a in params)
    n_in, units = w.shape[0], u.shape[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layer = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(n_in, units, batch_first=True)
    with torch.no_grad():
        if kind == "lstm":  # same gate order i, f, g, o; one bias
            layer.weight_ih_l0.copy_(torch.from_numpy(w.T.copy()))
            layer.weight_hh_l0.copy_(torch.from_numpy(u.T.copy()))
            layer.bias_ih_l0.copy_(torch.from_numpy(b))
            layer.bias_hh_l0.zero_()
        else:  # Keras z, r, h -> PyTorch r, z, n; reset-after is PyTorch's form
            order = lambda a: np.concatenate([a[..., units : 2 * units], a[..., :units], a[..., 2 * units :]], -1)  # noqa: E731
            layer.weight_ih_l0.copy_(torch.from_numpy(order(w).T.copy()))
            layer.weight_hh_l0.copy_(torch.from_numpy(order(u).T.copy()))
            layer.bias_ih_l0.copy_(torch.from_numpy(order(b[0])))
            layer.bias_hh_l0.copy_(torch.from_numpy(order(b[1])))
    layer = layer.to(device=device, dtype=getattr(torch, dtype))
    return layer, device


def _torch_time(fn, repeats, device):
    import torch

    fn()
    if device != "cuda":
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return statistics.median(times)


def bench_one(config, repeats, inner, interpret=False):
    kind, batch, steps, n_in, units, dtype, training = config
    cell, params = make_weights(kind, n_in, units)
    x_np = np.random.default_rng(0).normal(size=(batch, steps, n_in)).astype(np.float32)
    ref = reference(kind, params, x_np)
    rows = []

    jax_impls = {
        "jrnn scan": jrnn_impl(kind, params, cell, dtype, False),
        "jrnn fused (XLA)": jrnn_impl(kind, params, cell, dtype, True),
        "jrnn Pallas" + (" (interpreter)" if interpret else ""): pallas_impl(
            kind, params, cell, dtype, units, interpret
        ),
        "jax.experimental.rnn (cuDNN, fp32)": jax_cudnn_impl(kind, params, "float32"),
    }
    for name, impl in jax_impls.items():
        if impl is not None:
            x = jnp.asarray(x_np, "float32" if "fp32" in name else dtype)
            rows.append(_guarded(name, _measure_jax, *impl, x, ref, training, repeats, inner))
    try:
        import torch
    except ImportError:
        print("  skip pytorch: not installed", file=sys.stderr)
        return rows
    for tdtype in ["float16", "bfloat16"] if torch.cuda.is_available() else ["float32"]:
        layer, device = torch_impl(kind, params, tdtype)
        x = torch.from_numpy(x_np).to(device=device, dtype=getattr(torch, tdtype))
        name = f"pytorch {'cuDNN' if device == 'cuda' else 'CPU'} {tdtype}"
        rows.append(_guarded(name, _measure_torch, layer, x, device, ref, training, repeats))
    return rows


def _guarded(name, measure, *args):
    """``(name, *measure(*args))``; a failure becomes a row saying so, and the other rows still run.

    A kernel that has never run on this GPU must not cost a lease the peers' numbers.
    """
    try:
        return (name, *measure(*args))
    except Exception as e:  # reported in the table and on stderr
        print(f"  {name} failed: {type(e).__name__}: {e}"[:2000], file=sys.stderr)
        nan = float("nan")
        return (f"{name} (failed: {type(e).__name__}, see the log)", nan, nan, nan, nan)


def _measure_jax(forward, p, x, ref, training, repeats, inner):
    fwd = jax.jit(forward)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(forward(p, x).astype(jnp.float32) ** 2), argnums=(0, 1)))
    err = float(np.max(np.abs(np.asarray(fwd(p, x), np.float64) - ref)))
    t_f = _jax_timer(fwd, (p, x), repeats, inner)
    t_b = _jax_timer(grad, (p, x), repeats, inner) if training else float("nan")
    return t_f, t_b, _jax_memory(grad if training else forward, (p, x)), err


def _measure_torch(layer, x, device, ref, training, repeats):
    import torch

    def fwd():
        with torch.no_grad():
            return layer(x)[0]

    def fwd_bwd():
        xg = x.detach().requires_grad_(True)
        layer.zero_grad()
        (layer(xg)[0].float() ** 2).sum().backward()

    err = float(np.max(np.abs(fwd().float().cpu().numpy().astype(np.float64) - ref)))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_f = _torch_time(fwd, repeats, device)
    t_b = _torch_time(fwd_bwd, repeats, device) if training else float("nan")
    mem = torch.cuda.max_memory_allocated() if device == "cuda" else float("nan")
    return t_f, t_b, mem, err


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any backend")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--inner", type=int, default=5, help="JAX calls per timed batch")
    parser.add_argument("--out", default="bench/results/gpu.md", help="markdown file, or - for stdout")
    parser.add_argument("--only", default="", help="a regex: run the sections whose title matches it")
    parser.add_argument("--interpret", action="store_true", help="the Pallas row in the Mosaic GPU interpreter")
    args = parser.parse_args()
    device = jax.devices()[0]
    lines = [
        "# GPU benchmark: LSTM/GRU layers, jrnn against cuDNN",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}` (from the repository root)",
        f"Device: {device.device_kind} ({jax.default_backend()}); host {platform.machine()}, {os.cpu_count()} cores",
        f"Versions: jax {jax.__version__}, jrnn {jrnn.__version__}, python {platform.python_version()}",
        f"Git: {_report.git_head()}",
        "",
        "Median milliseconds after warm-up; us/step is the forward divided by the sequence length;",
        "memory is the forward+backward peak (forward only for inference rows); error is the largest",
        "absolute difference of the forward outputs from a float64 NumPy reference.",
        "",
    ]
    for config in SMOKE if args.smoke else MATRIX:
        kind, batch, steps, n_in, units, dtype, training = config
        title = (
            f"{kind.upper()} B={batch} T={steps} I={n_in} H={units} {dtype} ({'training' if training else 'inference'})"
        )
        if not re.search(args.only, title):
            continue
        print(title, file=sys.stderr, flush=True)
        lines += [
            f"## {title}",
            "",
            "| implementation | fwd ms | us/step | fwd+bwd ms | peak MiB | max error |",
            "|---|---|---|---|---|---|",
        ]
        for name, t_f, t_b, mem, err in bench_one(config, args.repeats, args.inner, args.interpret):
            per_step = 1e6 * t_f / steps
            lines.append(
                f"| {name} | {1e3 * t_f:.3f} | {per_step:.2f} | {1e3 * t_b:.3f} | {mem / 2**20:.1f} | {err:.2e} |"
            )
        lines.append("")
        _report.write(lines, args.out, echo=False)  # what is measured so far survives a time limit
    _report.write(lines, args.out)


if __name__ == "__main__":
    main()

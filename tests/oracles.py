"""Float64 NumPy references: the Keras cell equations and the Keras unrolled RNN loop.

Written from the Keras equations, independently of jrnn's code: no JAX, no shared helpers.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),  # Keras 2
    "hard_sigmoid_keras3": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    None: lambda x: x,
}


def simple_rnn_step(w, state, x, act="tanh", rec_act=None):
    kernel, recurrent, bias = w
    z = x @ kernel + state[0] @ recurrent + (0.0 if bias is None else bias)
    h = ACTIVATIONS[act](z)
    return h, (h,)


def gru_step(w, state, x, act="tanh", rec_act="sigmoid", reset_after=False):
    kernel, recurrent, bias = w
    (h,) = state
    u = recurrent.shape[0]
    a, ra = ACTIVATIONS[act], ACTIVATIONS[rec_act]
    if bias is None:
        b_in, b_rec = np.zeros(3 * u), np.zeros(3 * u)
    elif reset_after:
        b_in, b_rec = bias[0], bias[1]
    else:
        b_in, b_rec = bias, np.zeros(3 * u)
    xz = x @ kernel + b_in
    z = ra(xz[:, :u] + h @ recurrent[:, :u] + b_rec[:u])
    r = ra(xz[:, u : 2 * u] + h @ recurrent[:, u : 2 * u] + b_rec[u : 2 * u])
    if reset_after:
        hh = a(xz[:, 2 * u :] + r * (h @ recurrent[:, 2 * u :] + b_rec[2 * u :]))
    else:
        hh = a(xz[:, 2 * u :] + (r * h) @ recurrent[:, 2 * u :])
    h = z * h + (1 - z) * hh
    return h, (h,)


def lstm_step(w, state, x, act="tanh", rec_act="sigmoid"):
    kernel, recurrent, bias = w
    h, c = state
    u = recurrent.shape[0]
    a, ra = ACTIVATIONS[act], ACTIVATIONS[rec_act]
    z = x @ kernel + h @ recurrent + (0.0 if bias is None else bias)
    i, f, g, o = (z[:, k * u : (k + 1) * u] for k in range(4))
    c = ra(f) * c + ra(i) * a(g)
    h = ra(o) * a(c)
    return h, (h, c)


def run(step, w, state, xs, mask=None, reverse=False, zero_output_for_mask=False):
    """The Keras loop over (batch, time, n) inputs; outputs aligned with inputs."""
    xs = np.asarray(xs, np.float64)
    w = tuple(None if a is None else np.asarray(a, np.float64) for a in w)
    state = tuple(np.asarray(s, np.float64) for s in state)
    batch, steps = xs.shape[:2]
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    ys = [None] * steps
    prev = None
    for t in order:
        y, new = step(w, state, xs[:, t])
        if prev is None:
            prev = np.zeros_like(y)
        if mask is not None:
            m = np.asarray(mask[:, t])[:, None]
            new = tuple(np.where(m, n, s) for n, s in zip(new, state, strict=True))
            y = np.where(m, y, 0.0 if zero_output_for_mask else prev)
        state, prev, ys[t] = new, y, y
    return np.stack(ys, axis=1) if steps else np.zeros((batch, 0, state[0].shape[-1])), state

"""What the benchmark scripts share: the cells they time, the commit they ran at, writing the report."""

from __future__ import annotations

import os
import random
import subprocess
import time

# The cells the benchmarks time: Keras 3's LSTM and GRU (sigmoid, reset_after=True), which every
# peer computes too, and, for jrnn against itself, SimpleRNN and jrnn's own defaults, the Keras-2
# LSTM and GRU (hard_sigmoid; the GRU reset_after=False).
KINDS = ("lstm", "gru", "simple_rnn", "lstm_keras2", "gru_keras2")


def cell(kind: str, units: int):
    """The jrnn cell of ``kind`` (``KINDS``) with ``units`` units."""
    import jrnn

    if kind == "lstm":
        return jrnn.cells.lstm(units, recurrent_activation="sigmoid")
    if kind == "gru":
        return jrnn.cells.gru(units, recurrent_activation="sigmoid", reset_after=True)
    if kind == "simple_rnn":
        return jrnn.cells.simple_rnn(units)
    if kind in ("lstm_keras2", "gru_keras2"):
        return (jrnn.cells.lstm if kind == "lstm_keras2" else jrnn.cells.gru)(units)
    raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")


def timed_rounds(calls: dict, rounds: int, settle: int = 0) -> dict:
    """``{key: [seconds, ...]}``: each call of ``calls`` (no arguments; blocks until done) once a round.

    The order is shuffled every round (seeded, so reruns repeat it): run in a fixed order, a call's
    time depended on its place in the round by up to 8-9% (bench/cpu.py's docstring). ``settle``
    untimed calls precede each timed one, so that it runs as in a loop of its own calls, not in
    what the previous implementation left behind (bench/cpu.py: PyTorch's spinning threads).
    """
    times = {key: [] for key in calls}
    order, rng = list(calls), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for key in order:
            for _ in range(settle):
                calls[key]()
            start = time.perf_counter()
            calls[key]()
            times[key].append(time.perf_counter() - start)
    return times


def git_head() -> str:
    """The checkout's commit; ``unknown`` where there is no git (a copied tree on a device machine)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        head = ""
    return head or "unknown"


def write(lines: list[str], out: str, echo: bool = True) -> None:
    """Writes the report to ``out`` unless ``out`` is ``-``, and prints it if ``echo``."""
    text = "\n".join(lines)
    if out != "-":
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
    if echo:
        print(text)

"""What the benchmark scripts share: the cells they time, the commit they ran at, writing the report."""

from __future__ import annotations

import os
import subprocess


def cell(kind: str, units: int):
    """The jrnn cell every benchmark times: Keras 3's LSTM, or its GRU (reset_after=True)."""
    import jrnn

    if kind == "lstm":
        return jrnn.cells.lstm(units, recurrent_activation="sigmoid")
    return jrnn.cells.gru(units, recurrent_activation="sigmoid", reset_after=True)


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

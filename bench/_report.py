"""What the benchmark scripts share: the commit they ran at, and writing their markdown report."""

from __future__ import annotations

import os
import subprocess


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def write(lines: list[str], out: str) -> None:
    """Prints the report, and writes it to ``out`` unless ``out`` is ``-``."""
    text = "\n".join(lines)
    if out != "-":
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
    print(text)

"""Every notebook in notebooks/ runs top to bottom at its small size (JRNN_NOTEBOOK_SMALL=1).

The committed notebooks hold the outputs of a full-size run; this test re-executes a copy and
keeps nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# jupyter_client warns about its own platform-directory migration; that is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_every_notebook_is_collected():
    assert {p.stem for p in NOTEBOOKS} >= {"tour", "addition", "stateful", "conv_lstm", "masking", "data_parallel"}


# Notebooks whose small run is mostly running, not compiling: their kernels get LLVM's
# optimizations back (tests/conftest.py turns them off). conv_lstm took 29 s without, 13 s with.
RUNTIME_BOUND = {"conv_lstm"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_the_small_size(path, monkeypatch):
    monkeypatch.setenv("JRNN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if path.stem in RUNTIME_BOUND:
        flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
        monkeypatch.setenv("XLA_FLAGS", flags.strip())
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

"""One helper for error messages, so every message has the same shape.

Messages read "`arg` must be <expected>. Received: <received>", so that the user sees which
argument was wrong, what jrnn wanted and what it got, without reading a stack trace.
"""

from __future__ import annotations


def message(arg: str, expected: str, received: str) -> str:
    """Builds "`arg` must be expected. Received: received"."""
    return f"`{arg}` must be {expected}. Received: {received}"

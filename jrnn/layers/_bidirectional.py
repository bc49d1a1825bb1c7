"""Keras ``Bidirectional`` semantics shared by the wrappers: merging and state splitting."""

from __future__ import annotations

import jax.numpy as jnp

from jrnn._errors import message

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def check_merge_mode(merge_mode):
    if merge_mode not in MERGE_MODES:
        raise ValueError(message("merge_mode", f"one of {MERGE_MODES}", repr(merge_mode)))
    return merge_mode


def split_initial_state(initial_state) -> tuple[list | None, list | None]:
    """Keras' flat ``[*forward_states, *backward_states]`` into the two halves."""
    if initial_state is None:
        return None, None
    states = list(initial_state)
    if len(states) % 2:
        raise ValueError(
            message("initial_state", "a list of forward then backward states (even length)", f"{len(states)} arrays")
        )
    return states[: len(states) // 2], states[len(states) // 2 :]


def merge(merge_mode, out_f, out_b, *, return_sequences: bool, return_state: bool, time_major: bool = False):
    """Re-reverses the backward sequence to input order and merges as Keras does.

    ``out_f``/``out_b`` are each layer's output, or ``[output, *states]`` with ``return_state``;
    the result is the merged output (two outputs when ``merge_mode`` is None), then the forward
    states, then the backward ones.
    """
    (y_f, *states_f), (y_b, *states_b) = (out_f, out_b) if return_state else ([out_f], [out_b])
    if return_sequences:
        y_b = jnp.flip(y_b, axis=0 if time_major else 1)
    merged = {
        "concat": lambda: [jnp.concatenate([y_f, y_b], axis=-1)],
        "sum": lambda: [y_f + y_b],
        "mul": lambda: [y_f * y_b],
        "ave": lambda: [(y_f + y_b) / 2],
        None: lambda: [y_f, y_b],
    }[merge_mode]()
    if not return_state:
        return merged[0] if merge_mode is not None else merged
    return [*merged, *states_f, *states_b]

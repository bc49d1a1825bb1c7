"""Keras-style user cells (``state_size``; ``call(x, states) -> (y, new_states)``) as pure Cells."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from jrnn._types import Cell


def state_sizes(state_size) -> list[int]:
    """Keras' ``state_size``, an int or a list of ints, as a list."""
    return list(state_size) if isinstance(state_size, (list, tuple)) else [state_size]


def keras_cell(call: Callable, state_size, *, takes_constants: bool) -> Cell:
    """A pure Cell around ``call(params, x, states, **kwargs) -> (y, new_states)``.

    The wrappers supply ``call`` (NNX merges the module's graph, Linen applies an unbound clone).
    The state is a tuple of ``(*batch, size)`` arrays, one per entry of ``state_size``. Without
    ``takes_constants`` the step has no ``constants`` keyword, so ``jrnn.run`` refuses constants
    instead of silently dropping them.
    """
    sizes = state_sizes(state_size)

    def init_state(batch_shape=(), dtype=jnp.float32):
        batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        return tuple(jnp.zeros((*batch_shape, s), dtype) for s in sizes)

    def run_call(params, state, x, **kwargs):
        y, new = call(params, x, list(state), **kwargs)
        new = tuple(new) if isinstance(new, (list, tuple)) else (new,)
        return y, tuple(n.astype(s.dtype) for n, s in zip(new, state, strict=True))

    if takes_constants:

        def step(params, state, x, *, constants=None):
            return run_call(params, state, x, **({} if constants is None else {"constants": constants}))

    else:

        def step(params, state, x):
            return run_call(params, state, x)

    return Cell(None, init_state, step)

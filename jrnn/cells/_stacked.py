"""StackedRNNCells: cells applied in sequence within one time step."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jrnn._errors import message
from jrnn._types import ByIdentity, Cell, accepts_keyword


def output_dim(cell: Cell, params, input_dim: int, dtype=jnp.float32) -> int:
    """The feature size of ``cell``'s output, found by shape evaluation of one step."""
    x = jax.ShapeDtypeStruct((input_dim,), dtype)
    y = jax.eval_shape(lambda p, s, x: cell.step(p, s, x)[0], params, cell.init_state((), dtype), x)
    return y.shape[-1]


def stacked(cells: Sequence[Cell]) -> Cell:
    """Keras ``StackedRNNCells``: the output of cell k is the input of cell k+1.

    Params and states are tuples in natural cell order (the first cell first). ``constants``
    reach every cell whose step takes them, and ``dropout`` is a tuple of per-cell masks.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.cells.stacked([jrnn.cells.lstm(4), jrnn.cells.gru(3)])
      >>> params = cell.init_params(jax.random.key(0), 2)
      >>> y, (s_lstm, s_gru) = cell.step(params, cell.init_state((6,)), jnp.ones((6, 2)))
      >>> y.shape, s_lstm.c.shape
      ((6, 3), (6, 4))
    """
    cells = tuple(cells) if isinstance(cells, (list, tuple)) else None
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise ValueError(message("cells", "a non-empty list of jrnn Cells", repr(cells)))
    return _stacked(tuple(ByIdentity(c) for c in cells))


# The same cells give the same stacked cell, one object: the Flax wrappers stack their cells in
# every call, and ``jrnn.layers.rnn`` keeps its compiled loops per cell object.
@functools.lru_cache(maxsize=256)
def _stacked(keys: tuple[ByIdentity, ...]) -> Cell:
    cells = tuple(k.value for k in keys)
    takes_constants = tuple(accepts_keyword(c.step, "constants") for c in cells)

    def init_params(key, input_dim, dtype=jnp.float32):
        params = []
        for i, (cell, k) in enumerate(zip(cells, jax.random.split(key, len(cells)), strict=True)):
            params.append(cell.init_params(k, input_dim, dtype))
            if i + 1 < len(cells):  # only a cell that feeds another needs its output size
                input_dim = output_dim(cell, params[-1], input_dim, dtype)
        return tuple(params)

    def init_state(batch_shape=(), dtype=jnp.float32):
        return tuple(cell.init_state(batch_shape, dtype) for cell in cells)

    def _check(name, value):
        if not isinstance(value, (tuple, list)) or len(value) != len(cells):
            raise ValueError(message(name, f"a tuple of {len(cells)} per-cell entries", f"{value!r:.200}"))

    def step(params, state, x, *, constants=None, dropout=None):
        _check("params", params)
        _check("state", state)
        masks = dropout if dropout is not None else (None,) * len(cells)
        new_states = []
        for cell, p, s, m, takes in zip(cells, params, state, masks, takes_constants, strict=True):
            kwargs = {}
            if constants is not None and takes:
                kwargs["constants"] = constants
            if m is not None:
                kwargs["dropout"] = m
            x, s = cell.step(p, s, x, **kwargs)
            new_states.append(s)
        return x, tuple(new_states)

    def dropout_masks(key, params, batch_shape=(), dtype=jnp.float32):
        keys = jax.random.split(key, len(cells))
        masks = tuple(
            c.dropout_masks(k, p, batch_shape, dtype) if c.dropout_masks is not None else None
            for c, k, p in zip(cells, keys, params, strict=True)
        )
        return None if all(m is None for m in masks) else masks

    return Cell(init_params, init_state, step, dropout_masks)

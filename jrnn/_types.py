"""The cell contract: a NamedTuple of pure functions (the optax GradientTransformation pattern)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax

PyTree = Any


class StepFn(Protocol):
    """``step(params, state, x, *, constants=None, dropout=None) -> (y, new_state)``.

    ``x`` has any leading batch dims; ``new_state`` has the structure, shapes and dtypes of
    ``state``. ``dropout`` holds masks drawn once per sequence (see ``Cell.dropout_masks``).
    """

    def __call__(self, params: PyTree, state: PyTree, x: jax.Array, **kwargs) -> tuple[jax.Array, PyTree]: ...


class Cell(NamedTuple):
    """A recurrent cell: configuration lives in the closures, arrays in the pytrees they take.

    Attributes:
      init_params: ``(key, input_dim, dtype=float32) -> params``.
      init_state: ``(batch_shape, dtype=float32) -> state``, zeros; no key.
      step: a ``StepFn``.
      dropout_masks: ``(key, params, batch_shape, dtype=float32) -> masks | None``: the
        variational masks for one sequence, passed to ``step`` as ``dropout=masks`` (``None``
        when the cell has no dropout). Optional for user cells.
      config: for built-in cells, their math as plain data (``{"kind": "lstm", "activation":
        fn, ...}``) so that ``jrnn.kernels`` can run the same cell fused; ``None`` otherwise.
    """

    init_params: Callable[..., PyTree]
    init_state: Callable[..., PyTree]
    step: StepFn
    dropout_masks: Callable[..., PyTree] | None = None
    config: dict | None = None


class ByIdentity:
    """``value`` as a hashable key equal only to a key of the same object.

    A cell as a static ``jax.jit`` argument: its ``config`` dict cannot be hashed, and two cells
    compute the same steps for certain only when they are one object.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other) -> bool:
        return isinstance(other, ByIdentity) and other.value is self.value


def cache_when_hashable(fn: Callable, maxsize: int = 256) -> Callable:
    """``fn`` with an LRU cache for calls whose arguments can be hashed; other calls run ``fn`` as is.

    For builders of cells that run in every call of a Flax wrapper: equal arguments then give one
    cell object, which ``jrnn.layers.rnn`` keys its compiled layer on.
    """
    cached = functools.lru_cache(maxsize=maxsize, typed=True)(fn)

    @functools.wraps(fn)
    def call(*args):
        try:
            hash(args)
        except TypeError:
            return fn(*args)
        return cached(*args)

    return call


def accepts_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes keyword ``name`` (explicitly or through ``**kwargs``), as Keras' has_arg."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

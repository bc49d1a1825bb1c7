"""Keras weight constraints: ``array -> array`` projections applied after each optimizer update.

``axis`` follows Keras: norms are taken over ``axis`` (default 0), so for a kernel ``(n_in, g)``
each column, the weights into one unit, is constrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jrnn._lookup import lookup

Constraint = Callable[[jax.Array], jax.Array]

_EPSILON = 1e-7  # keras.backend.epsilon()


def _norms(w, axis):
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


class _Base:
    def get_config(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MaxNorm(_Base):
    max_value: float = 2.0
    axis: int | tuple[int, ...] = 0

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0.0, self.max_value)
        return w * (desired / (_EPSILON + norms))


@dataclasses.dataclass(frozen=True)
class NonNeg(_Base):
    def __call__(self, w):
        return w * (w >= 0).astype(w.dtype)


@dataclasses.dataclass(frozen=True)
class UnitNorm(_Base):
    axis: int | tuple[int, ...] = 0

    def __call__(self, w):
        return w / (_EPSILON + _norms(w, self.axis))


@dataclasses.dataclass(frozen=True)
class MinMaxNorm(_Base):
    min_value: float = 0.0
    max_value: float = 1.0
    rate: float = 1.0
    axis: int | tuple[int, ...] = 0

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * jnp.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (_EPSILON + norms))


max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm
_FACTORIES = {
    "max_norm": MaxNorm,
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "min_max_norm": MinMaxNorm,
    "MaxNorm": MaxNorm,
    "NonNeg": NonNeg,
    "UnitNorm": UnitNorm,
    "MinMaxNorm": MinMaxNorm,
}


def get(identifier: str | dict | Constraint | None, arg: str = "constraint") -> Constraint | None:
    """Returns a constraint for a Keras name, a Keras config dict, a callable or ``None``."""
    return lookup(identifier, _FACTORIES, arg)

"""Keras weight regularizers: ``array -> scalar`` penalties.

They never run inside a recurrent step; a layer adds them to the loss. Defaults follow Keras 2:
``'l1'`` and ``'l2'`` use 0.01, and ``'l1_l2'`` uses 0.01 for both terms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jrnn._errors import message
from jrnn._lookup import lookup

Regularizer = Callable[[jax.Array], jax.Array]


def _check_factor(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(message(name, "a finite float >= 0", f"{name}={value!r}"))


@dataclasses.dataclass(frozen=True)
class L1L2:
    """``l1 * sum(|w|) + l2 * sum(w**2)``."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        _check_factor("l1", self.l1)
        _check_factor("l2", self.l2)

    def __call__(self, w: jax.Array) -> jax.Array:
        penalty = jnp.zeros((), w.dtype)
        if self.l1:
            penalty = penalty + self.l1 * jnp.sum(jnp.abs(w))
        if self.l2:
            penalty = penalty + self.l2 * jnp.sum(jnp.square(w))
        return penalty

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


def l1(l1: float = 0.01) -> L1L2:
    return L1L2(l1=l1)


def l2(l2: float = 0.01) -> L1L2:
    return L1L2(l2=l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    return L1L2(l1=l1, l2=l2)


L1 = l1
L2 = l2
_FACTORIES = {"l1": l1, "l2": l2, "l1_l2": l1_l2, "L1": l1, "L2": l2, "L1L2": L1L2}


def get(identifier: str | dict | Regularizer | None, arg: str = "regularizer") -> Regularizer | None:
    """Returns a regularizer for a Keras name, a Keras config dict, a callable or ``None``."""
    return lookup(identifier, _FACTORIES, arg)

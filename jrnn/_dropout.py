"""Variational dropout masks, drawn once per sequence from an explicit key.

A mask has a leading gate axis: ``(count, *batch, n)`` with ``count`` the number of gates under
Keras' ``implementation=1`` (one mask per gate) and 1 otherwise. Kept entries hold ``1 / (1 -
rate)`` so that the expected value of a masked input is unchanged, as in Keras.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn._errors import message


class DropoutMasks(NamedTuple):
    """Masks for one sequence; ``None`` where that rate is 0."""

    inputs: jax.Array | None  # (count, *batch, n_in)
    recurrent: jax.Array | None  # (count, *batch, units)


def check_rate(name: str, rate: float) -> float:
    """Validates a dropout rate in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0.0 <= rate < 1.0) or math.isnan(rate):
        raise ValueError(message(name, "a float in [0, 1)", f"{name}={rate!r}"))
    return float(rate)


def variational_mask(key: jax.Array, rate: float, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array | None:
    """A 0 / ``1/(1-rate)`` mask of ``shape``, or ``None`` when ``rate == 0``."""
    if rate == 0.0:
        return None
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def make_masks(
    key: jax.Array,
    *,
    rate: float,
    recurrent_rate: float,
    count: int,
    batch_shape: tuple[int, ...],
    input_dim: int,
    units: int,
    dtype=jnp.float32,
) -> DropoutMasks | None:
    """Both masks of one cell for one sequence, or ``None`` if both rates are 0."""
    if rate == 0.0 and recurrent_rate == 0.0:
        return None
    k_in, k_rec = jax.random.split(key)
    return DropoutMasks(
        inputs=variational_mask(k_in, rate, (count, *batch_shape, input_dim), dtype),
        recurrent=variational_mask(k_rec, recurrent_rate, (count, *batch_shape, units), dtype),
    )


def per_gate(v: jax.Array, masks: jax.Array | None, gates: int) -> list[jax.Array]:
    """``v`` as seen by each of ``gates`` gates: masked per gate, by one shared mask, or as is."""
    if masks is None:
        return [v] * gates
    if masks.shape[0] == 1:
        return [v * masks[0]] * gates
    return [v * masks[g] for g in range(gates)]


def matmul_gates(vs: list[jax.Array], w: jax.Array) -> jax.Array:
    """Concatenates ``vs[g] @ w_g`` over gate blocks of ``w``; one matmul when all ``vs`` agree."""
    if all(v is vs[0] for v in vs):
        return vs[0] @ w
    blocks = jnp.split(w, len(vs), axis=-1)
    return jnp.concatenate([v @ b for v, b in zip(vs, blocks, strict=True)], axis=-1)

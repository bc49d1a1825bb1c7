"""Mask validation and helpers. A mask is boolean, True where a step is real."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jrnn._errors import message


def check_mask(mask, expected_shape: tuple[int, ...], layout: str) -> jax.Array:
    """Returns ``mask`` as a boolean array after checking its dtype and shape."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(message("mask", "a boolean array (use mask.astype(bool))", f"mask.dtype={mask.dtype}"))
    if mask.shape != tuple(expected_shape):
        raise ValueError(message("mask", f"of shape {tuple(expected_shape)} {layout}", f"mask.shape={mask.shape}"))
    return mask


def mask_from_lengths(lengths: jax.Array, maxlen: int) -> jax.Array:
    """``(batch,)`` valid lengths -> ``(batch, maxlen)`` right-padded mask.

    Example:
      >>> import jax.numpy as jnp, jrnn
      >>> jrnn.mask_from_lengths(jnp.array([2, 0]), 3).tolist()
      [[True, True, False], [False, False, False]]
    """
    lengths = jnp.asarray(lengths)
    steps = jnp.arange(maxlen).reshape((1,) * lengths.ndim + (maxlen,))
    return steps < lengths[..., None]


def expand_to(m: jax.Array, leaf: jax.Array) -> jax.Array:
    """Appends unit axes to a per-example mask so that it broadcasts against ``leaf``."""
    return m.reshape(m.shape + (1,) * (leaf.ndim - m.ndim))


def compute_mask(tokens: jax.Array, mask_value=0) -> jax.Array:
    """Keras' ``Embedding(mask_zero=True)`` mask: True where ``tokens != mask_value``.

    Example:
      >>> import jax.numpy as jnp, jrnn
      >>> jrnn.compute_mask(jnp.array([[3, 1, 0, 0]])).tolist()
      [[True, True, False, False]]
    """
    return jnp.asarray(tokens) != mask_value


def masking_mask(x: jax.Array, mask_value=0.0) -> jax.Array:
    """Keras' ``Masking`` rule: a step is real unless every feature equals ``mask_value``."""
    return jnp.any(jnp.asarray(x) != mask_value, axis=-1)

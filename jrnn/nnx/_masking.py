"""Keras' ``Masking`` layer for NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jrnn._masking import masking_mask


class Masking(nnx.Module):
    """Keras ``Masking(mask_value)``: zeros masked steps and returns ``(x, mask)``.

    Keras attaches the mask to the tensor; JAX arrays carry none, so the mask is returned for the
    next layer's ``mask=`` argument.
    """

    def __init__(self, mask_value: float = 0.0):
        self.mask_value = mask_value

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = masking_mask(x, self.mask_value)
        return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype)), mask

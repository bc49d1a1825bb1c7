"""Weight regularizers and constraints over Keras-named params (``kernel``, ``recurrent_kernel``,
``bias``), and the activity penalty Keras adds for a layer's outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jrnn._errors import message

PyTree = Any
WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias")


def weight_penalty(params: PyTree, regularizers: dict[str, Callable | None]) -> jax.Array:
    """Sum of ``regularizers[name](params.name)`` over the Keras weight names present."""
    total = jnp.zeros((), jnp.float32)
    for name, reg in regularizers.items():
        w = getattr(params, name, None)
        if reg is not None and w is not None:
            total = total + reg(w).astype(jnp.float32)
    return total


def activity_penalty(regularizer: Callable | None, outputs) -> jax.Array:
    """Keras: the activity regularizer of every returned array, each divided by its batch size."""
    total = jnp.zeros((), jnp.float32)
    if regularizer is None:
        return total
    for o in jax.tree.leaves(outputs):
        penalty = regularizer(o).astype(jnp.float32)
        total = total + (penalty / o.shape[0] if o.ndim > 0 and o.shape[0] else penalty)
    return total


def constrain(params: PyTree, constraints: dict[str, Callable | None]) -> PyTree:
    """``params`` with each named weight projected by its constraint (Keras, after each update)."""
    changes = {
        name: c(getattr(params, name))
        for name, c in constraints.items()
        if c is not None and getattr(params, name, None) is not None
    }
    return params._replace(**changes) if changes else params


def projection(project: Callable[[PyTree], PyTree]) -> optax.GradientTransformation:
    """An optax transformation, placed last in a chain, that moves params to ``project(params +
    update)``: Keras applies weight constraints this way, after each optimizer step.

    Example:
      >>> import jax.numpy as jnp, optax, jrnn
      >>> tx = optax.chain(optax.sgd(1.0), jrnn.layers.projection(lambda p: jnp.maximum(p, 0.0)))
      >>> params = jnp.array([0.5, 0.25])
      >>> grads = jnp.array([1.0, -0.5])  # sgd alone would give [-0.5, 0.75]
      >>> updates, _ = tx.update(grads, tx.init(params), params)
      >>> optax.apply_updates(params, updates).tolist()
      [0.0, 0.75]
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(message("params", "passed to update() by the optimizer", "None"))
        projected = project(optax.apply_updates(params, updates))
        return jax.tree.map(lambda new, old: new - old, projected, params), state

    return optax.GradientTransformation(init_fn, update_fn)

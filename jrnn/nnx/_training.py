"""Training helpers: Keras' weight constraints as an optax transformation, and the loss terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jrnn.layers import projection
from jrnn.nnx._cells import _KerasCell
from jrnn.nnx._rnn import RNN


def constraints(model: nnx.Module, wrt=nnx.Param) -> optax.GradientTransformation:
    """An optax transformation that makes every jrnn weight satisfy its constraint after the update.

    Place it last in the chain (``optax.chain(optax.adam(1e-3), jrnn.nnx.constraints(model))``):
    the update it returns moves each parameter to ``constraint(param + update)``, which is what
    Keras does after each optimizer step.
    """
    graphdef, _, rest = nnx.split(model, wrt, ...)

    def project(params):
        updated = nnx.merge(graphdef, params, rest)
        for _, node in nnx.iter_graph(updated):
            if isinstance(node, _KerasCell):
                node.apply_constraints()
        return jax.tree.map(
            lambda v: v.get_value() if isinstance(v, nnx.Variable) else v,
            nnx.state(updated, wrt),
            is_leaf=lambda v: isinstance(v, nnx.Variable),
        )

    return projection(project)


def regularization_loss(model: nnx.Module) -> jax.Array:
    """Every jrnn layer's weight penalties plus its last activity loss: Keras' ``sum(model.losses)``."""
    total = jnp.zeros((), jnp.float32)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, RNN):
            total = total + node.regularization_loss()
    return total

"""SimpleRNN cell: ``h = activation(x @ kernel + bias + h_prev @ recurrent_kernel)``."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jrnn._dropout import DropoutMasks
from jrnn._types import Cell
from jrnn.cells import _common


class SimpleRNNParams(NamedTuple):
    """Keras-layout SimpleRNN weights."""

    kernel: Float[Array, "n_in units"]
    recurrent_kernel: Float[Array, "units units"]
    bias: Float[Array, " units"] | None = None  # None iff use_bias=False


class SimpleRNNState(NamedTuple):
    h: Float[Array, "*batch units"]


def simple_rnn_step(params, state, x, *, constants=None, dropout: DropoutMasks | None = None, activation):
    """One SimpleRNN step; ``constants`` is part of the step protocol and unused here."""
    del constants
    x = _common.check_step_args("simple_rnn", params, SimpleRNNParams, state, SimpleRNNState, x, params.kernel.shape[1])
    p, h = _common.cast(params, x.dtype), state.h.astype(x.dtype)
    if dropout is not None and dropout.inputs is not None:
        x = x * dropout.inputs[0]
    if dropout is not None and dropout.recurrent is not None:
        h = h * dropout.recurrent[0]
    z = x @ p.kernel
    if p.bias is not None:
        z = _common.add_bias(z, p.bias)
    h = activation(z + h @ p.recurrent_kernel)
    return h, SimpleRNNState(h)


def simple_rnn(
    units: int,
    *,
    activation="tanh",
    use_bias: bool = True,
    kernel_initializer="glorot_uniform",
    recurrent_initializer="orthogonal",
    bias_initializer="zeros",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
) -> Cell:
    """Keras ``SimpleRNNCell`` as a pure ``Cell``.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.cells.simple_rnn(3)
      >>> params = cell.init_params(jax.random.key(0), 2)
      >>> y, state = cell.step(params, cell.init_state((4,)), jnp.ones((4, 2)))
      >>> y.shape
      (4, 3)
    """
    units = _common.check_units(units)
    act, _, k_init, r_init, b_init = _common.resolve(
        activation, None, kernel_initializer, recurrent_initializer, bias_initializer
    )
    dropout_masks = _common.dropout_masks_fn(dropout, recurrent_dropout, count=1, units=units)

    def init_params(key, input_dim, dtype=jnp.float32):
        input_dim = _common.check_input_dim(input_dim)
        k1, k2, k3 = jax.random.split(key, 3)
        return SimpleRNNParams(
            kernel=k_init(k1, (input_dim, units), dtype),
            recurrent_kernel=r_init(k2, (units, units), dtype),
            bias=b_init(k3, (units,), dtype) if use_bias else None,
        )

    def init_state(batch_shape=(), dtype=jnp.float32):
        return SimpleRNNState(jnp.zeros((*_common.batch_shape_tuple(batch_shape), units), dtype))

    config = {"kind": "simple_rnn", "activation": act, "implementation": 1}
    return Cell(init_params, init_state, partial(simple_rnn_step, activation=act), dropout_masks, config)

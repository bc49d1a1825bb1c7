"""GRU cell (Keras ``GRUCell``): gates ``z|r|h``, both ``reset_after`` forms."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jrnn._dropout import DropoutMasks, matmul_gates, per_gate
from jrnn._types import Cell
from jrnn.cells import _common


class GRUParams(NamedTuple):
    """Keras-layout GRU weights; gate blocks ordered z|r|h along the last axis.

    ``bias`` is ``(3u,)``, or ``(2, 3u)`` with ``reset_after=True`` (row 0 input bias, row 1
    recurrent bias), or ``None`` when ``use_bias=False``.
    """

    kernel: Float[Array, "n_in g"]  # g = 3 * units
    recurrent_kernel: Float[Array, "units g"]
    bias: Float[Array, "*two g"] | None = None


class GRUState(NamedTuple):
    h: Float[Array, "*batch units"]


def gru_step(
    params,
    state,
    x,
    *,
    constants=None,
    dropout: DropoutMasks | None = None,
    activation,
    recurrent_activation,
    reset_after: bool,
):
    """One GRU step (Keras' equations; the update mixes the undropped previous state)."""
    del constants
    units = params.recurrent_kernel.shape[0]
    x = _common.check_step_args("gru", params, GRUParams, state, GRUState, x, units)
    p, h = _common.cast(params, x.dtype), state.h.astype(x.dtype)
    d = dropout if dropout is not None else DropoutMasks(None, None)
    xs, hs = per_gate(x, d.inputs, 3), per_gate(h, d.recurrent, 3)
    input_bias, recurrent_bias = (p.bias[0], p.bias[1]) if reset_after and p.bias is not None else (p.bias, None)

    x_proj = matmul_gates(xs, p.kernel)
    if input_bias is not None:
        x_proj = _common.add_bias(x_proj, input_bias)
    x_z, x_r, x_h = jnp.split(x_proj, 3, axis=-1)
    u = p.recurrent_kernel
    if reset_after:
        h_proj = matmul_gates(hs, u)
        if recurrent_bias is not None:
            h_proj = _common.add_bias(h_proj, recurrent_bias)
        h_z, h_r, h_h = jnp.split(h_proj, 3, axis=-1)
        z = recurrent_activation(x_z + h_z)
        r = recurrent_activation(x_r + h_r)
        candidate = activation(x_h + r * h_h)
    else:
        h_z, h_r = jnp.split(matmul_gates(hs[:2], u[:, : 2 * units]), 2, axis=-1)
        z = recurrent_activation(x_z + h_z)
        r = recurrent_activation(x_r + h_r)
        candidate = activation(x_h + (r * hs[2]) @ u[:, 2 * units :])
    h = z * h + (1 - z) * candidate
    return h, GRUState(h)


def gru(
    units: int,
    *,
    activation="tanh",
    recurrent_activation="hard_sigmoid",
    use_bias: bool = True,
    kernel_initializer="glorot_uniform",
    recurrent_initializer="orthogonal",
    bias_initializer="zeros",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    implementation: int = 1,
    reset_after: bool = False,
) -> Cell:
    """Keras ``GRUCell`` as a pure ``Cell`` (Keras-2 defaults: hard_sigmoid, reset_after=False).

    ``implementation`` only changes how dropout masks are drawn (one per gate under 1, one shared
    under 2), as in Keras; without dropout both compute the same function.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.cells.gru(3, reset_after=True)
      >>> params = cell.init_params(jax.random.key(0), 2)
      >>> params.bias.shape
      (2, 9)
    """
    units = _common.check_units(units)
    implementation = _common.check_implementation(implementation)
    act, rec_act, k_init, r_init, b_init = _common.resolve(
        activation, recurrent_activation, kernel_initializer, recurrent_initializer, bias_initializer
    )
    dropout_masks = _common.dropout_masks_fn(
        dropout, recurrent_dropout, count=3 if implementation == 1 else 1, units=units
    )
    reset_after = bool(reset_after)

    def init_params(key, input_dim, dtype=jnp.float32):
        input_dim = _common.check_input_dim(input_dim)
        k1, k2, k3 = jax.random.split(key, 3)
        bias_shape = (2, 3 * units) if reset_after else (3 * units,)
        return GRUParams(
            kernel=k_init(k1, (input_dim, 3 * units), dtype),
            recurrent_kernel=r_init(k2, (units, 3 * units), dtype),
            bias=b_init(k3, bias_shape, dtype) if use_bias else None,
        )

    def init_state(batch_shape=(), dtype=jnp.float32):
        return GRUState(jnp.zeros((*_common.batch_shape_tuple(batch_shape), units), dtype))

    step = partial(gru_step, activation=act, recurrent_activation=rec_act, reset_after=reset_after)
    config = {
        "kind": "gru",
        "activation": act,
        "recurrent_activation": rec_act,
        "implementation": implementation,
        "reset_after": reset_after,
    }
    return Cell(init_params, init_state, step, dropout_masks, config)

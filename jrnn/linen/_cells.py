"""Linen cell modules: Keras fields and lazily created, Keras-named params. No math here."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from jrnn import cells, constraints, regularizers
from jrnn._types import Cell, cache_when_hashable
from jrnn.layers import WEIGHT_NAMES, state_from_list, states_to_list

PyTree = Any
_INITIALIZERS = ("kernel_initializer", "recurrent_initializer", "bias_initializer")
_FIELDS = ("activation", "use_bias", *_INITIALIZERS, "dropout", "recurrent_dropout")


class _WeightFields(nn.Module, kw_only=True):
    """The Keras arguments about weights, shared by every cell and layer (keyword-only fields,
    so that each class can lead with its own size field: ``units`` or ``filters``)."""

    kernel_initializer: Any = "glorot_uniform"
    recurrent_initializer: Any = "orthogonal"
    bias_initializer: Any = "zeros"
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    kernel_constraint: Any = None
    recurrent_constraint: Any = None
    bias_constraint: Any = None
    param_dtype: Any = jnp.float32


class WeightConfig(_WeightFields):
    units: int


class CellConfig(WeightConfig):
    """The Keras arguments shared by the three cells (fields only; layers reuse them)."""

    activation: Any = "tanh"
    use_bias: bool = True
    dropout: float = 0.0
    recurrent_dropout: float = 0.0


class GRUConfig(CellConfig):
    recurrent_activation: Any = "hard_sigmoid"
    implementation: int = 1
    reset_after: bool = False


class LSTMConfig(CellConfig):
    recurrent_activation: Any = "hard_sigmoid"
    implementation: int = 1
    unit_forget_bias: bool = True


def config_of(module: nn.Module, config_type: type) -> dict:
    """The values of ``config_type``'s fields on ``module`` (to build a cell from a layer)."""
    return {
        f.name: getattr(module, f.name) for f in dataclasses.fields(config_type) if f.name not in ("parent", "name")
    }


# One object for equal arguments: a Linen module builds its cell in every ``apply``. Arguments
# that cannot be hashed (a list for a kernel size) build a new cell each time.
@cache_when_hashable
def _built(factory, size, kwargs: tuple) -> Cell:
    """``factory(size, **dict(kwargs))``."""
    return factory(size, **dict(kwargs))


class _KerasCell(_WeightFields):
    """Behaviour shared by the cells: the factory's arguments are ``_args`` fields."""

    _factory: ClassVar = None
    _params_type: ClassVar = None
    _args: ClassVar[tuple[str, ...]] = ()
    _n_states: ClassVar[int] = 1
    _size: ClassVar[str] = "units"  # the field the factory takes first

    def pure_cell(self) -> Cell:
        kwargs = tuple((name, getattr(self, name)) for name in self._args)
        return _built(type(self)._factory, getattr(self, self._size), kwargs)

    def input_dim(self, x: jax.Array) -> int:
        """The input size the weights are created for, from one step's input."""
        return x.shape[-1]

    @nn.compact
    def pure(self, input_dim: int) -> tuple[Cell, PyTree]:
        """The pure cell and its params, created on first use from the input size."""
        cell = self.pure_cell()
        created = {}

        def init(name):
            def fn(key):
                if "all" not in created:  # one draw of the pure cell's init, shared by the fields
                    created["all"] = cell.init_params(key, input_dim, self.param_dtype)
                return getattr(created["all"], name)

            return fn

        names = WEIGHT_NAMES if getattr(self, "use_bias", True) else WEIGHT_NAMES[:2]
        values = [self.param(name, init(name)) for name in names]
        return cell, type(self)._params_type(*values)

    def zero_state(self, cell: Cell, x: jax.Array):
        return cell.init_state(x.shape[:-1], x.dtype)

    def regularizers(self) -> dict:
        return {
            "kernel": regularizers.get(self.kernel_regularizer, "kernel_regularizer"),
            "recurrent_kernel": regularizers.get(self.recurrent_regularizer, "recurrent_regularizer"),
            "bias": regularizers.get(self.bias_regularizer, "bias_regularizer"),
        }

    def constraints(self) -> dict:
        return {
            "kernel": constraints.get(self.kernel_constraint, "kernel_constraint"),
            "recurrent_kernel": constraints.get(self.recurrent_constraint, "recurrent_constraint"),
            "bias": constraints.get(self.bias_constraint, "bias_constraint"),
        }

    @property
    def state_size(self) -> list[int]:
        return [getattr(self, self._size)] * self._n_states

    def __call__(self, x, states):
        """Keras cell call: ``(x, [h, ...]) -> (y, [h, ...])``."""
        cell, params = self.pure(self.input_dim(x))
        state = state_from_list(self.zero_state(cell, x), states, "states")
        y, new = cell.step(params, state, x)
        return y, states_to_list(new)


class SimpleRNNCell(CellConfig, _KerasCell):
    """Keras ``SimpleRNNCell``."""

    _factory = staticmethod(cells.simple_rnn)
    _params_type = cells.SimpleRNNParams
    _args = _FIELDS


class GRUCell(GRUConfig, _KerasCell):
    """Keras ``GRUCell`` with Keras-2 defaults (hard_sigmoid, reset_after=False)."""

    _factory = staticmethod(cells.gru)
    _params_type = cells.GRUParams
    _args = (*_FIELDS, "recurrent_activation", "implementation", "reset_after")


class LSTMCell(LSTMConfig, _KerasCell):
    """Keras ``LSTMCell`` with Keras-2 defaults (hard_sigmoid, unit_forget_bias=True)."""

    _factory = staticmethod(cells.lstm)
    _params_type = cells.LSTMParams
    _args = (*_FIELDS, "recurrent_activation", "implementation", "unit_forget_bias")
    _n_states = 2


class CuDNNLSTMConfig(WeightConfig):
    unit_forget_bias: bool = True


class CuDNNLSTMCell(CuDNNLSTMConfig, _KerasCell):
    """The cell of ``CuDNNLSTM`` (Keras 2 has none of its own): cuDNN weight layout, tanh/sigmoid."""

    _factory = staticmethod(cells.cudnn_lstm)
    _params_type = cells.CuDNNParams
    _args = (*_INITIALIZERS, "unit_forget_bias")
    _n_states = 2


class CuDNNGRUCell(WeightConfig, _KerasCell):
    """The cell of ``CuDNNGRU``: cuDNN weight layout, the reset-after GRU with tanh/sigmoid."""

    _factory = staticmethod(cells.cudnn_gru)
    _params_type = cells.CuDNNParams
    _args = _INITIALIZERS


class ConvLSTMConfig(_WeightFields):
    """Keras 2's ConvLSTM2D arguments (fields only; ``rank`` picks 1D, 2D or 3D)."""

    filters: int
    kernel_size: Any
    strides: Any = 1
    padding: str = "valid"
    data_format: str = "channels_last"
    dilation_rate: Any = 1
    activation: Any = "tanh"
    recurrent_activation: Any = "hard_sigmoid"
    use_bias: bool = True
    unit_forget_bias: bool = True
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    rank: int = 2


class ConvLSTMCell(ConvLSTMConfig, _KerasCell):
    """Keras ``ConvLSTMCell`` (rank 1, 2 or 3; Keras-2 defaults) for Linen."""

    _factory = staticmethod(cells.conv_lstm)
    _params_type = cells.ConvLSTMParams
    _args = (
        *("kernel_size", "rank", "strides", "padding", "data_format", "dilation_rate", "activation"),
        *("recurrent_activation", "use_bias", *_INITIALIZERS, "unit_forget_bias", "dropout", "recurrent_dropout"),
    )
    _n_states = 2
    _size = "filters"

    def input_dim(self, x: jax.Array) -> int:
        return x.shape[-(self.rank + 1)] if self.data_format == "channels_first" else x.shape[-1]

    def zero_state(self, cell: Cell, x: jax.Array):
        cut = x.ndim - self.rank - 1
        return cell.init_state(x.shape[:cut], x.dtype, input_shape=x.shape[cut:])

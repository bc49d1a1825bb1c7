"""NNX ``RNN`` and the Keras layers built on it. Variables and argument checks only: the sequence
logic is ``jrnn.layers.rnn``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jrnn import cells, regularizers
from jrnn._errors import message
from jrnn._types import Cell, accepts_keyword, cache_when_hashable
from jrnn.layers import (
    activity_penalty,
    keras_cell,
    needs_dropout_key,
    rnn,
    state_from_list,
    state_sizes,
    states_to_list,
    weight_penalty,
    zero_state,
)
from jrnn.nnx._cells import (
    ConvLSTMCell,
    CuDNNGRUCell,
    CuDNNLSTMCell,
    GRUCell,
    LSTMCell,
    SimpleRNNCell,
    _KerasCell,
    input_dim_from,
)

PyTree = Any


class Carry(nnx.Variable):
    """A stateful layer's carried state (Keras' ``layer.states``)."""


class ActivityLoss(nnx.Variable):
    """The activity-regularization loss of the last call (what Keras puts in ``layer.losses``)."""


class StackedRNNCells(nnx.Module):
    """Keras ``StackedRNNCells``: states in natural cell order."""

    def __init__(self, cells_: list):
        if not isinstance(cells_, (list, tuple)) or not cells_:
            raise ValueError(message("cells", "a non-empty list of cells", repr(cells_)))
        self.cells = nnx.List(list(cells_))

    def pure(self) -> tuple[Cell, PyTree]:
        pures = [_pure_cell(c) for c in self.cells]
        return cells.stacked([c for c, _ in pures]), tuple(p for _, p in pures)

    @property
    def state_size(self) -> list[int]:
        return [s for c in self.cells for s in state_sizes(c.state_size)]


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class PureCell(nnx.Module):
    """A pure ``jrnn.cells`` Cell with its params held as ``nnx.Param``s (same pytree layout)."""

    def __init__(self, cell: Cell, *, input_dim: int, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.cell = cell
        self.weights = nnx.data(jax.tree.map(nnx.Param, cell.init_params(rngs.params(), input_dim, param_dtype)))

    def pure(self) -> tuple[Cell, PyTree]:
        return self.cell, jax.tree.map(lambda v: v[...], self.weights, is_leaf=_is_variable)

    @property
    def state_size(self) -> list[int]:
        return [leaf.shape[-1] for leaf in jax.tree.leaves(self.cell.init_state(()))]


def _user_cell(module: nnx.Module) -> tuple[Cell, PyTree]:
    """A Keras-style user cell as a pure Cell: its variables become the params, merged back into
    its graph at each step."""
    graphdef, params = nnx.split(module)
    takes = accepts_keyword(type(module).__call__, "constants")
    return _graph_cell(graphdef, tuple(state_sizes(module.state_size)), takes), params


# One Cell per module structure (graph definitions compare by structure and static attributes,
# not by weights): the cell is built in every call.
@cache_when_hashable
def _graph_cell(graphdef, sizes: tuple[int, ...], takes: bool) -> Cell:
    call = lambda params, x, states, **kw: nnx.merge(graphdef, params)(x, states, **kw)  # noqa: E731
    return keras_cell(call, list(sizes), takes_constants=takes)


def _pure_cell(cell) -> tuple[Cell, PyTree]:
    if isinstance(cell, (_KerasCell, StackedRNNCells, PureCell)):
        return cell.pure()
    if isinstance(cell, nnx.Module) and hasattr(cell, "state_size"):
        return _user_cell(cell)
    raise TypeError(
        message(
            "cell",
            "a jrnn.nnx cell, a list of cells, or an nnx.Module with `state_size` and __call__(x, states)",
            type(cell).__name__,
        )
    )


def _has_dropout(cell) -> bool:
    """Whether training draws dropout masks (and so needs an rng stream)."""
    if isinstance(cell, StackedRNNCells):
        return any(_has_dropout(c) for c in cell.cells)
    if isinstance(cell, _KerasCell):
        return any(rate > 0 for rate in cell.dropout_rates)
    if isinstance(cell, PureCell):
        return needs_dropout_key(*cell.pure(), batch=1)
    return False


def _example_shape(input_shape, batch_input_shape) -> tuple[int, ...] | None:
    """One step's input shape without the batch, from Keras' ``input_shape`` (with time) or
    ``batch_input_shape``; None when neither is given."""
    if input_shape is not None:
        return tuple(input_shape)[1:]
    if batch_input_shape is not None:
        return tuple(batch_input_shape)[2:]
    return None


class RNN(nnx.Module):
    """Keras ``RNN(cell)`` as an NNX module.

    ``cell`` is a jrnn.nnx cell, a list of cells (stacked), or a user cell module with a
    ``state_size`` and ``__call__(x, states) -> (y, new_states)``. Calling returns the output, or
    ``[output, *states]`` with ``return_state``. Dropout follows ``training``, else
    ``model.train()`` / ``model.eval()``, and draws its masks from ``rngs``' ``dropout`` stream.
    """

    def __init__(
        self,
        cell,
        *,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        unroll: bool = False,
        time_major: bool = False,
        zero_output_for_mask: bool = False,
        activity_regularizer=None,
        batch_size: int | None = None,
        batch_input_shape=None,
        input_length: int | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        input_dim: int | None = None,
        input_shape=None,
        use_fused: bool | str = "auto",
        use_cudnn: bool | str | None = None,
        deterministic: bool = False,
        rngs: nnx.Rngs | None = None,
    ):
        if isinstance(cell, Cell):
            if rngs is None:
                raise ValueError(message("rngs", "given to create the weights of a pure jrnn Cell", "rngs=None"))
            dim = input_dim_from(input_dim, input_shape, batch_input_shape)
            cell = PureCell(cell, input_dim=dim, param_dtype=param_dtype, rngs=rngs)
        self.cell = StackedRNNCells(cell) if isinstance(cell, (list, tuple)) else cell
        _pure_cell(self.cell)  # fails early, naming `cell`, for something that is not a cell
        if return_state and not state_sizes(self.cell.state_size):
            raise ValueError(message("return_state", "False for a cell without states", "return_state=True"))
        self.return_sequences, self.return_state = return_sequences, return_state
        self.go_backwards, self.unroll, self.time_major = go_backwards, unroll, time_major
        self.zero_output_for_mask, self.stateful, self.dtype = zero_output_for_mask, stateful, dtype
        self.input_length = input_length
        self.use_fused = use_fused if use_cudnn is None else use_cudnn
        self.activity_regularizer = regularizers.get(activity_regularizer, "activity_regularizer")
        self.activity_loss = ActivityLoss(jnp.zeros((), jnp.float32))
        self.deterministic = deterministic
        has_dropout = _has_dropout(self.cell)
        self.rngs = rngs["dropout"].fork() if (rngs is not None and has_dropout) else nnx.data(None)
        if batch_size is None and batch_input_shape is not None:
            batch_size = batch_input_shape[0]
        self.batch_size = batch_size
        if stateful and batch_size is None:
            raise ValueError(
                message("batch_size", "given (or batch_input_shape) for a stateful layer", "batch_size=None")
            )
        # one step's example shape, for cells whose state shape follows it (ConvLSTM)
        self.example_shape = _example_shape(input_shape, batch_input_shape)
        self.states = Carry(self._zero_state()) if stateful else nnx.data(None)

    def _zero_state(self):
        cell, _ = _pure_cell(self.cell)
        return zero_state(cell, self.batch_size, self.dtype or jnp.float32, self.example_shape)

    def reset_states(self, states=None) -> None:
        """Zeros, or ``states`` (an array or a list of arrays in Keras order), as the carry."""
        if not self.stateful:
            raise ValueError(message("stateful", "True to reset states", "stateful=False"))
        template = self._zero_state()
        if states is None:
            self.states.set_value(template)
        else:
            if not isinstance(states, (list, tuple)):
                states = [states]
            self.states.set_value(state_from_list(template, states, "states"))

    def __call__(self, inputs, mask=None, initial_state=None, constants=None, training=None):
        x = jnp.asarray(inputs)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        batch = x.shape[1 if self.time_major else 0]
        if self.stateful and initial_state is None:
            if batch != self.batch_size:
                raise ValueError(
                    message("inputs", f"a batch of {self.batch_size} for this stateful layer", f"batch {batch}")
                )
            initial_state = self.states.get_value()
        training = (not self.deterministic) if training is None else bool(training)
        cell, params = _pure_cell(self.cell)
        key = None
        if training and _has_dropout(self.cell):
            if self.rngs is None:
                raise ValueError(
                    message("rngs", "given at construction (nnx.Rngs(...)) to train with dropout", "rngs=None")
                )
            key = self.rngs()
        result = rnn(
            cell,
            params,
            x,
            initial_state=initial_state,
            mask=mask,
            constants=constants,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            time_major=self.time_major,
            zero_output_for_mask=self.zero_output_for_mask,
            training=training,
            dropout_key=key,
            use_fused=self.use_fused,
        )
        if self.stateful:
            self.states.set_value(result.state)
        outputs = [result.output, *states_to_list(result.state)] if self.return_state else result.output
        if self.activity_regularizer is not None:
            self.activity_loss.set_value(activity_penalty(self.activity_regularizer, outputs))
        return outputs

    def _keras_cells(self) -> list[_KerasCell]:
        return list(self.cell.cells) if isinstance(self.cell, StackedRNNCells) else [self.cell]

    def get_weights(self) -> list[np.ndarray]:
        """Keras order: each cell's kernel, recurrent_kernel, bias, cells in order."""
        return [w for c in self._keras_cells() for w in c.get_weights()]

    def set_weights(self, weights) -> None:
        weights, counts = list(weights), [len(c.get_weights()) for c in self._keras_cells()]
        if len(weights) != sum(counts):
            raise ValueError(message("weights", f"a list of {sum(counts)} arrays", f"{len(weights)} arrays"))
        for c, n in zip(self._keras_cells(), counts, strict=True):
            c.set_weights(weights[:n])
            weights = weights[n:]

    def regularization_loss(self) -> jax.Array:
        """Weight penalties of every cell plus the last activity loss (Keras' ``sum(layer.losses)``)."""
        total = sum(
            (weight_penalty(c.params, c.regularizers) for c in self._keras_cells() if isinstance(c, _KerasCell)),
            jnp.zeros((), jnp.float32),
        )
        return total + self.activity_loss.get_value()

    def get_config(self) -> dict:
        """Keras' RNN config: the cell's class and config, then the sequence arguments."""
        return {"cell": _cell_config(self.cell), **self._sequence_config(), "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict, *, rngs: nnx.Rngs):
        config = dict(config)
        return cls(_cell_from_config(config.pop("cell"), rngs), rngs=rngs, **config)

    def _sequence_config(self) -> dict:
        return {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "time_major": self.time_major,
            "use_fused": self.use_fused,
            "batch_size": self.batch_size,
            "activity_regularizer": None
            if self.activity_regularizer is None
            else {"class_name": "L1L2", "config": self.activity_regularizer.get_config()},
        }


_CELLS = {"SimpleRNNCell": SimpleRNNCell, "GRUCell": GRUCell, "LSTMCell": LSTMCell}


def _cell_config(cell) -> dict:
    if isinstance(cell, StackedRNNCells):
        return {"class_name": "StackedRNNCells", "config": {"cells": [_cell_config(c) for c in cell.cells]}}
    if isinstance(cell, _KerasCell):
        return {"class_name": type(cell).__name__, "config": cell.get_config()}
    raise ValueError(message("cell", "a jrnn.nnx Keras cell (or a stack of them) to serialize", type(cell).__name__))


def _cell_from_config(entry: dict, rngs: nnx.Rngs):
    if entry["class_name"] == "StackedRNNCells":
        return StackedRNNCells([_cell_from_config(c, rngs) for c in entry["config"]["cells"]])
    config = dict(entry["config"])
    return _CELLS[entry["class_name"]](config.pop("units"), rngs=rngs, **config)


class _KerasLayer(RNN):
    """SimpleRNN / GRU / LSTM: Keras' split of arguments, math to the cell, sequence to RNN."""

    _cell_type: type[_KerasCell]

    def __init__(
        self,
        units: int,
        *,
        input_dim=None,
        input_shape=None,
        batch_input_shape=None,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        math = {k: kwargs.pop(k) for k in list(kwargs) if k in self._cell_type._math_args}
        cell = self._cell_type(
            units,
            input_dim=input_dim,
            input_shape=input_shape,
            batch_input_shape=batch_input_shape,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            param_dtype=param_dtype,
            rngs=rngs,
            **math,
        )
        super().__init__(cell, input_shape=input_shape, batch_input_shape=batch_input_shape, rngs=rngs, **kwargs)

    @property
    def units(self) -> int:
        return self.cell.units

    def get_config(self) -> dict:
        return {**self.cell.get_config(), **self._sequence_config(), "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict, *, rngs: nnx.Rngs):
        config = dict(config)
        return cls(config.pop("units"), rngs=rngs, **config)


class SimpleRNN(_KerasLayer):
    """Keras ``SimpleRNN``."""

    _cell_type = SimpleRNNCell


class GRU(_KerasLayer):
    """Keras ``GRU`` with Keras-2 defaults (hard_sigmoid, reset_after=False, implementation=1)."""

    _cell_type = GRUCell


class LSTM(_KerasLayer):
    """Keras ``LSTM`` with Keras-2 defaults (hard_sigmoid, unit_forget_bias, implementation=1).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jrnn
      >>> layer = jrnn.nnx.LSTM(4, input_dim=3, return_sequences=True, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
    """

    _cell_type = LSTMCell


class _CuDNNLayer(_KerasLayer):
    """CuDNNLSTM / CuDNNGRU: always on the fused path (``use_fused=False`` is an error)."""

    def __init__(self, units: int, *, use_fused: bool | str = True, use_cudnn: bool | str | None = None, **kwargs):
        fused = use_fused if use_cudnn is None else use_cudnn
        if fused is False:
            raise ValueError(message("use_fused", "True: the CuDNN layers run on the fused path", "False"))
        super().__init__(units, use_fused=True, **kwargs)


class CuDNNLSTM(_CuDNNLayer):
    """Keras 2's ``CuDNNLSTM``: cuDNN weight layout (bias ``(8u,)``: input half, recurrent half),
    tanh / sigmoid, the fused path on every backend, and (unlike Keras 2) masks.

    ``jrnn.cells.cudnn_to_lstm`` converts its weights for ``LSTM(recurrent_activation='sigmoid')``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jrnn
      >>> layer = jrnn.nnx.CuDNNLSTM(4, input_dim=3, rngs=nnx.Rngs(0))
      >>> [w.shape for w in layer.get_weights()]
      [(3, 16), (4, 16), (32,)]
    """

    _cell_type = CuDNNLSTMCell


class CuDNNGRU(_CuDNNLayer):
    """Keras 2's ``CuDNNGRU``: the reset-after GRU with tanh / sigmoid, cuDNN weight layout
    (bias ``(6u,)``); ``jrnn.cells.cudnn_to_gru`` converts for ``GRU(reset_after=True)``."""

    _cell_type = CuDNNGRUCell


class _ConvLSTM(_KerasLayer):
    """ConvLSTM1D / 2D / 3D: Keras 2's ConvLSTM2D arguments on the N-d cell."""

    _cell_type = ConvLSTMCell
    _rank: int

    def __init__(self, filters: int, kernel_size, *, unroll: bool = False, rngs: nnx.Rngs, **kwargs):
        if unroll is not False:
            raise ValueError(message("unroll", "False: convolutional recurrent layers cannot be unrolled", unroll))
        if (
            kwargs.get("stateful")
            and _example_shape(kwargs.get("input_shape"), kwargs.get("batch_input_shape")) is None
        ):
            raise ValueError(
                message(
                    "batch_input_shape",
                    "given with its spatial sizes for a stateful ConvLSTM (the carried state has them)",
                    "None",
                )
            )
        super().__init__(filters, kernel_size=kernel_size, rank=self._rank, rngs=rngs, **kwargs)

    @property
    def filters(self) -> int:
        return self.cell.units

    def get_config(self) -> dict:
        config = super().get_config()
        config["filters"] = config.pop("units")
        config.pop("rank", None)
        config.pop("unroll", None)
        if self.example_shape is not None:
            config["batch_input_shape"] = (self.batch_size, None, *self.example_shape)
        return config

    @classmethod
    def from_config(cls, config: dict, *, rngs: nnx.Rngs):
        config = dict(config)
        return cls(config.pop("filters"), config.pop("kernel_size"), rngs=rngs, **config)


class ConvLSTM1D(_ConvLSTM):
    """Keras ``ConvLSTM1D``: inputs ``(batch, time, steps, channels)`` (channels_last)."""

    _rank = 1


class ConvLSTM2D(_ConvLSTM):
    """Keras ``ConvLSTM2D`` with Keras-2 defaults (hard_sigmoid, unit_forget_bias): inputs
    ``(batch, time, rows, cols, channels)``, or ``(batch, time, channels, rows, cols)`` with
    ``data_format='channels_first'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jrnn
      >>> layer = jrnn.nnx.ConvLSTM2D(4, (3, 3), padding="same", input_shape=(None, 8, 8, 2), rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 8, 8, 2))).shape
      (2, 8, 8, 4)
    """

    _rank = 2


class ConvLSTM3D(_ConvLSTM):
    """Keras ``ConvLSTM3D``: inputs ``(batch, time, depth, rows, cols, channels)`` (channels_last)."""

    _rank = 3

"""Linen ``RNN`` and the Keras layers. Lazy shapes; dropout from the ``dropout`` rng stream; the
stateful carry in the ``carry`` collection; weight and activity penalties sown into ``losses``.
The sequence logic is ``jrnn.layers.rnn``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from jrnn import cells, regularizers
from jrnn._errors import message
from jrnn._masking import masking_mask
from jrnn._types import Cell, accepts_keyword, cache_when_hashable
from jrnn.layers import (
    activity_penalty,
    check_merge_mode,
    constrain,
    keras_cell,
    merge,
    needs_dropout_key,
    rnn,
    split_initial_state,
    state_from_list,
    state_sizes,
    states_to_list,
    weight_penalty,
    zero_state,
)
from jrnn.linen._cells import (
    CellConfig,
    ConvLSTMCell,
    ConvLSTMConfig,
    CuDNNGRUCell,
    CuDNNLSTMCell,
    CuDNNLSTMConfig,
    GRUCell,
    GRUConfig,
    LSTMCell,
    LSTMConfig,
    SimpleRNNCell,
    WeightConfig,
    _KerasCell,
    config_of,
)

PyTree = Any


def _user_cell(module: nn.Module, x0: jax.Array, constants=None) -> tuple[Cell, PyTree]:
    """A Keras-style Linen cell as a pure Cell. Bound modules cannot run inside ``lax.scan``, so
    each step applies an unbound clone to the cell's params (created here, on first use, from the
    first step's input)."""
    takes = accepts_keyword(type(module).__call__, "constants")
    first = {"constants": constants} if takes and constants is not None else {}
    sizes = tuple(state_sizes(module.state_size))
    module(x0, [jnp.zeros((*x0.shape[:-1], s), x0.dtype) for s in sizes], **first)  # creates the params lazily
    return _module_cell(module.clone(parent=None), sizes, takes), module.variables.get("params", {})


@cache_when_hashable
def _module_cell(unbound: nn.Module, sizes: tuple[int, ...], takes: bool) -> Cell:
    """The pure Cell of an unbound user cell, one per configuration: Linen rebuilds the clone in
    every apply, and equal clones (a dataclass's fields) compute the same, so eager calls reuse the
    compiled layer. Clones with unhashable fields (arrays, lists) get a new Cell every call."""
    call = lambda params, x, states, **kw: unbound.apply({"params": params}, x, states, **kw)  # noqa: E731
    return keras_cell(call, sizes, takes_constants=takes)


class StackedRNNCells(nn.Module):
    """Keras ``StackedRNNCells`` for Linen: ``RNN(StackedRNNCells([...]))`` equals ``RNN([...])``;
    params live under ``cells_0``, ``cells_1``, ..."""

    cells: tuple

    @property
    def state_size(self) -> list[int]:
        return [s for c in self.cells for s in state_sizes(c.state_size)]


def _resolve(
    module: nn.Module, cell, x0: jax.Array, constants=None
) -> tuple[Cell, PyTree, list[tuple[PyTree, _KerasCell]]]:
    """The pure cell, its params, and the (params, Keras cell) pairs that carry regularizers."""
    if isinstance(cell, StackedRNNCells):
        cell = cell.cells
    if isinstance(cell, (list, tuple)):
        pures, params, keras_cells, dim = [], [], [], x0.shape[-1]
        for c in cell:
            pure, p, kc = _resolve(module, c, jnp.zeros((*x0.shape[:-1], dim), x0.dtype), constants)
            pures.append(pure)
            params.append(p)
            keras_cells += kc
            dim = cells.output_dim(pure, p, dim, x0.dtype)
        return cells.stacked(pures), tuple(params), keras_cells
    if isinstance(cell, _KerasCell):
        pure, params = cell.pure(cell.input_dim(x0))
        return pure, params, [(params, cell)]
    if isinstance(cell, Cell):
        params = module.param("cell", lambda key: cell.init_params(key, x0.shape[-1], jnp.float32))
        return cell, params, []
    if isinstance(cell, nn.Module) and hasattr(cell, "state_size"):
        pure, params = _user_cell(cell, x0, constants)
        return pure, params, []
    raise TypeError(
        message(
            "cell",
            "a jrnn.linen cell, a list of cells, a jrnn Cell, or a Linen module with `state_size`",
            type(cell).__name__,
        )
    )


class SequenceConfig(nn.Module, kw_only=True):
    """Keras' sequence arguments (keyword-only, so layers can follow the cell's ``units``)."""

    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    unroll: bool | int = False
    time_major: bool = False
    zero_output_for_mask: bool = False
    activity_regularizer: Any = None
    batch_size: int | None = None
    input_dim: int | None = None
    input_shape: tuple | None = None
    batch_input_shape: tuple | None = None
    input_length: int | None = None
    use_fused: bool | str = "auto"
    use_cudnn: bool | str | None = None
    dtype: Any = None

    def _expected_shape(self) -> tuple[int | None, int | None, int | None]:
        """(batch, time, features) from Keras' shape arguments; None where not given."""
        if self.batch_input_shape is not None:
            batch, time, *_, features = self.batch_input_shape
            return batch, time, features
        if self.input_shape is not None:
            time, *_, features = self.input_shape
            return self.batch_size, time, features
        return self.batch_size, self.input_length, self.input_dim

    def _sequence(self, cell, inputs, mask, initial_state, constants, training):
        x = jnp.asarray(inputs)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        batch = x.shape[1 if self.time_major else 0]
        batch_size, _, features = self._expected_shape()
        if features is not None and x.shape[-1] != features:
            raise ValueError(message("inputs", f"of {features} features (input_dim)", f"inputs.shape={x.shape}"))
        x0 = jnp.zeros((batch, *x.shape[2:]), x.dtype)  # one step's input, for lazy shapes
        pure, params, keras_cells = _resolve(self, cell, x0, constants)
        if not jax.tree.leaves(zero_state(pure, batch, x.dtype, x.shape[2:])) and self.return_state:
            raise ValueError(message("return_state", "False for a cell without states", "return_state=True"))
        regs = [(p, c.regularizers()) for p, c in keras_cells]
        penalties = [weight_penalty(p, r) for p, r in regs if any(r.values())]
        if penalties:
            self.sow("losses", "weights", sum(penalties))

        if self.stateful:
            if batch_size is None:
                raise ValueError(
                    message("batch_size", "given (or batch_input_shape) for a stateful layer", "batch_size=None")
                )
            carry = self.variable("carry", "states", lambda: zero_state(pure, batch_size, x.dtype, x.shape[2:]))
            if batch != batch_size:
                raise ValueError(
                    message("inputs", f"a batch of {batch_size} for this stateful layer", f"batch {batch}")
                )
            if initial_state is None:
                initial_state = carry.value
        key = self.make_rng("dropout") if training and needs_dropout_key(pure, params, batch, x.shape[2:]) else None
        result = rnn(
            pure,
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
            use_cudnn=self.use_cudnn,
        )
        if self.stateful and not self.is_initializing():
            if not self.is_mutable_collection("carry"):
                raise ValueError(
                    message("mutable", "to include 'carry' for a stateful layer: apply(..., mutable=['carry'])", "no")
                )
            carry.value = result.state
        outputs = [result.output, *states_to_list(result.state)] if self.return_state else result.output
        reg = regularizers.get(self.activity_regularizer, "activity_regularizer")
        if reg is not None:
            self.sow("losses", "activity", activity_penalty(reg, outputs))
        return outputs


class RNN(SequenceConfig):
    """Keras ``RNN(cell)`` for Linen: a jrnn.linen cell, a list of cells (stacked), a pure jrnn
    Cell, or a user Linen cell with ``state_size`` and ``__call__(x, states)``.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> module = jrnn.linen.RNN(jrnn.linen.GRUCell(4), return_sequences=True)
      >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 3)))
      >>> module.apply(variables, jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
    """

    cell: Any = None

    @nn.compact
    def __call__(self, inputs, mask=None, initial_state=None, constants=None, training: bool = False):
        return self._sequence(self.cell, inputs, mask, initial_state, constants, training)


class _KerasLayer(SequenceConfig):
    """SimpleRNN / GRU / LSTM: the cell's fields (Keras' math arguments) plus the sequence fields."""

    _cell_type: ClassVar[type]
    _config_type: ClassVar[type]

    def cell_module(self, **kwargs) -> _KerasCell:
        return self._cell_type(**config_of(self, self._config_type), **kwargs)

    def _check_arguments(self) -> None:
        """Layer-specific argument errors, raised before any work (the CuDNN and ConvLSTM layers)."""

    @nn.compact
    def __call__(self, inputs, mask=None, initial_state=None, constants=None, training: bool = False):
        self._check_arguments()
        return self._sequence(self.cell_module(name="cell"), inputs, mask, initial_state, constants, training)


class SimpleRNN(CellConfig, _KerasLayer):
    """Keras ``SimpleRNN`` for Linen."""

    _cell_type, _config_type = SimpleRNNCell, CellConfig


class GRU(GRUConfig, _KerasLayer):
    """Keras ``GRU`` for Linen (Keras-2 defaults: hard_sigmoid, reset_after=False)."""

    _cell_type, _config_type = GRUCell, GRUConfig


class LSTM(LSTMConfig, _KerasLayer):
    """Keras ``LSTM`` for Linen (Keras-2 defaults: hard_sigmoid, unit_forget_bias=True).

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> module = jrnn.linen.LSTM(4, return_state=True)
      >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 3)))
      >>> [a.shape for a in module.apply(variables, jnp.ones((2, 5, 3)))]
      [(2, 4), (2, 4), (2, 4)]
    """

    _cell_type, _config_type = LSTMCell, LSTMConfig


class _CuDNNLayer(_KerasLayer):
    """CuDNNLSTM / CuDNNGRU: always on the fused path (``use_fused=False`` is an error)."""

    def _check_arguments(self) -> None:
        fused = self.use_fused if self.use_cudnn is None else self.use_cudnn
        if fused is False:
            raise ValueError(message("use_fused", "True or 'auto': the CuDNN layers run on the fused path", "False"))


class CuDNNLSTM(CuDNNLSTMConfig, _CuDNNLayer):
    """Keras 2's ``CuDNNLSTM`` for Linen: cuDNN weight layout (bias ``(8u,)``), tanh / sigmoid,
    the fused path on every backend, and (unlike Keras 2) masks.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> module = jrnn.linen.CuDNNLSTM(4)
      >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 3)))
      >>> variables["params"]["cell"]["bias"].shape
      (32,)
    """

    _cell_type, _config_type = CuDNNLSTMCell, CuDNNLSTMConfig


class CuDNNGRU(WeightConfig, _CuDNNLayer):
    """Keras 2's ``CuDNNGRU`` for Linen: the reset-after GRU, cuDNN weight layout (bias ``(6u,)``)."""

    _cell_type, _config_type = CuDNNGRUCell, WeightConfig


class _ConvLSTM(ConvLSTMConfig, _KerasLayer):
    """ConvLSTM1D / 2D / 3D for Linen: Keras 2's ConvLSTM2D arguments on the N-d cell."""

    _cell_type, _config_type = ConvLSTMCell, ConvLSTMConfig

    def _check_arguments(self) -> None:
        if self.unroll is not False:
            raise ValueError(message("unroll", "False: convolutional recurrent layers cannot be unrolled", self.unroll))


class ConvLSTM1D(_ConvLSTM):
    """Keras ``ConvLSTM1D`` for Linen (``rank`` is fixed at 1)."""

    rank: int = 1


class ConvLSTM2D(_ConvLSTM):
    """Keras ``ConvLSTM2D`` for Linen (Keras-2 defaults: hard_sigmoid, unit_forget_bias).

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> module = jrnn.linen.ConvLSTM2D(4, (3, 3), padding="same")
      >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 8, 8, 2)))
      >>> module.apply(variables, jnp.ones((2, 5, 8, 8, 2))).shape
      (2, 8, 8, 4)
    """

    rank: int = 2


class ConvLSTM3D(_ConvLSTM):
    """Keras ``ConvLSTM3D`` for Linen (``rank`` is fixed at 3)."""

    rank: int = 3


def _keras_cells(module) -> list[tuple[tuple[str, ...], _KerasCell]]:
    """(param path, cell) of every Keras cell in a Linen layer, in Keras weight order."""
    if isinstance(module, _KerasLayer):
        return [(("cell",), module.cell_module(parent=None))]  # a detached copy, for its config
    if isinstance(module, Bidirectional):
        backward = module.backward_layer or module.layer
        return [(("forward_layer", *path), c) for path, c in _keras_cells(module.layer)] + [
            (("backward_layer", *path), c) for path, c in _keras_cells(backward)
        ]
    cell = module.cell
    if isinstance(cell, StackedRNNCells):
        return [(("cell", f"cells_{i}"), c) for i, c in enumerate(cell.cells) if isinstance(c, _KerasCell)]
    if isinstance(cell, (list, tuple)):
        return [((f"cell_{i}",), c) for i, c in enumerate(cell) if isinstance(c, _KerasCell)]
    return [(("cell",), cell)] if isinstance(cell, _KerasCell) else []


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def get_weights(module: nn.Module, params: PyTree) -> list[jax.Array]:
    """A Linen layer's weights in Keras order (each cell's kernel, recurrent_kernel, bias)."""
    weights = []
    for path, _ in _keras_cells(module):
        p = _at(params, path)
        weights += [p[n] for n in ("kernel", "recurrent_kernel", "bias") if n in p]
    return weights


def set_weights(module: nn.Module, params: PyTree, weights) -> PyTree:
    """``params`` with a Linen layer's weights replaced by ``weights`` (Keras order and layout)."""
    params = jax.tree.map(lambda a: a, params)  # a copy: Linen params are immutable to the caller
    weights = list(weights)
    expected = len(get_weights(module, params))
    if len(weights) != expected:
        raise ValueError(message("weights", f"a list of {expected} arrays", f"{len(weights)} arrays"))
    for path, _ in _keras_cells(module):
        p = _at(params, path)
        for n in ("kernel", "recurrent_kernel", "bias"):
            if n in p:
                w = jnp.asarray(weights.pop(0))
                if w.shape != p[n].shape:
                    raise ValueError(message(f"weights[{n}]", f"of shape {p[n].shape}", f"shape {w.shape}"))
                p[n] = w.astype(p[n].dtype)
    return params


def constrain_params(module: nn.Module, params: PyTree) -> PyTree:
    """A Linen layer's params with each weight projected by its Keras constraint."""
    params = jax.tree.map(lambda a: a, params)
    for path, cell in _keras_cells(module):
        p = _at(params, path)
        names = [n for n in ("kernel", "recurrent_kernel", "bias") if n in p]
        fake = cell._params_type(*[p[n] for n in names], *([None] * (3 - len(names))))
        for n, v in zip(names, constrain(fake, cell.constraints()), strict=False):
            p[n] = v
    return params


def reset_states(variables: PyTree, states=None) -> PyTree:
    """``variables`` with the ``carry`` collection zeroed, or set to ``states`` (Keras order)."""
    carry = variables["carry"]
    if states is None:
        new = jax.tree.map(jnp.zeros_like, carry)
    else:
        leaves, treedef = jax.tree.flatten(carry)
        new = jax.tree.unflatten(treedef, jax.tree.leaves(state_from_list(leaves, list(states), "states")))
    return {**variables, "carry": new}


class Bidirectional(nn.Module):
    """Keras ``Bidirectional(layer, merge_mode='concat', backward_layer=None)`` for Linen.

    Params live under ``forward_layer`` and ``backward_layer``; the backward layer defaults to
    ``layer`` with ``go_backwards`` flipped. Both output zeros at masked steps when they return
    sequences, as in Keras.
    """

    layer: nn.Module
    merge_mode: str | None = "concat"
    backward_layer: nn.Module | None = None

    @nn.compact
    def __call__(self, inputs, mask=None, initial_state=None, constants=None, training: bool = False):
        check_merge_mode(self.merge_mode)
        base = self.layer
        backward = self.backward_layer or base.clone(parent=None, go_backwards=not base.go_backwards)
        zero = base.return_sequences
        fwd = base.clone(parent=self, name="forward_layer", zero_output_for_mask=zero)
        bwd = backward.clone(parent=self, name="backward_layer", zero_output_for_mask=zero)
        init_f, init_b = split_initial_state(initial_state)
        kwargs = dict(mask=mask, constants=constants, training=training)
        out_f = fwd(inputs, initial_state=init_f, **kwargs)
        out_b = bwd(inputs, initial_state=init_b, **kwargs)
        return merge(
            self.merge_mode,
            out_f,
            out_b,
            return_sequences=base.return_sequences,
            return_state=base.return_state,
            time_major=base.time_major,
        )


class Masking(nn.Module):
    """Keras ``Masking(mask_value)``: zeros masked steps and returns ``(x, mask)`` for the next
    layer's ``mask=`` (JAX arrays carry no mask)."""

    mask_value: float = 0.0

    def __call__(self, x):
        mask = masking_mask(x, self.mask_value)
        return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype)), mask


def get_config(module: nn.Module) -> dict:
    """A Linen layer's Keras-named fields (nested for a Bidirectional's layers)."""
    config = {}
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name"):
            continue
        value = getattr(module, field.name)
        config[field.name] = get_config(value) if isinstance(value, nn.Module) else value
    if isinstance(module, Bidirectional):
        config["layer"] = {"class_name": type(module.layer).__name__, "config": config["layer"]}
        if module.backward_layer is not None:
            config["backward_layer"] = {
                "class_name": type(module.backward_layer).__name__,
                "config": config["backward_layer"],
            }
    return config


def from_config(cls: type, config: dict) -> nn.Module:
    """The inverse of ``get_config``."""
    config = dict(config)
    for key in ("layer", "backward_layer"):
        if isinstance(config.get(key), dict) and "class_name" in config[key]:
            config[key] = from_config(_LAYERS[config[key]["class_name"]], config[key]["config"])
    return cls(**config)


_LAYERS = {
    "SimpleRNN": SimpleRNN,
    "GRU": GRU,
    "LSTM": LSTM,
    "CuDNNGRU": CuDNNGRU,
    "CuDNNLSTM": CuDNNLSTM,
    "ConvLSTM1D": ConvLSTM1D,
    "ConvLSTM2D": ConvLSTM2D,
    "ConvLSTM3D": ConvLSTM3D,
    "Bidirectional": Bidirectional,
}

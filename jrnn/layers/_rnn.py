"""The Keras sequence surface as a pure function: ``rnn(cell, params, xs, ...)``.

Everything a Keras ``RNN`` layer does around its cell, and nothing that holds state: the stateful
carry goes in as ``initial_state`` and comes back in ``RNNResult.state``; dropout masks come from
an explicit key. The Flax wrappers (``jrnn.nnx``, ``jrnn.linen``) only store variables and call
this.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._errors import message
from jrnn._runner import check_unroll, run
from jrnn._types import ByIdentity, Cell, accepts_keyword
from jrnn.kernels import choose, run_fused

PyTree = Any


class RNNResult(NamedTuple):
    """``output`` is ``(batch, time, units)`` with ``return_sequences`` else ``(batch, units)``;
    ``state`` is the cell's state pytree after the last processed step."""

    output: jax.Array
    state: PyTree


def states_to_list(state: PyTree) -> list[jax.Array]:
    """A cell state as Keras' flat list of state arrays (LSTM: ``[h, c]``; stacked: natural order)."""
    return jax.tree.leaves(state)


def state_from_list(template: PyTree, states, arg: str = "initial_state") -> PyTree:
    """Keras-style ``[h, c]`` (nested for stacked cells, or one array) into the cell's state pytree."""
    leaves, treedef = jax.tree.flatten(template)
    states = jax.tree.leaves(states)  # a Keras list, nested lists, or the state pytree itself
    if len(states) != len(leaves):
        raise ValueError(message(arg, f"a list of {len(leaves)} state arrays for this cell", f"{len(states)} arrays"))
    arrays = []
    for i, (given, like) in enumerate(zip(states, leaves, strict=True)):
        given = jnp.asarray(given)
        if given.shape != like.shape:
            raise ValueError(message(f"{arg}[{i}]", f"of shape {like.shape}", f"shape {given.shape}"))
        arrays.append(given.astype(like.dtype))
    return jax.tree.unflatten(treedef, arrays)


def _example_shape(fn, input_shape) -> dict:
    """``input_shape=`` for cells whose state shape follows the input's (ConvLSTM), else nothing."""
    return {"input_shape": tuple(input_shape)} if input_shape is not None and accepts_keyword(fn, "input_shape") else {}


def zero_state(cell: Cell, batch: int, dtype=jnp.float32, input_shape=None) -> PyTree:
    """The cell's zero state for ``batch`` sequences whose steps are ``(batch, *input_shape)``."""
    return cell.init_state((batch,), dtype, **_example_shape(cell.init_state, input_shape))


def needs_dropout_key(cell: Cell, params: PyTree, batch: int, input_shape=None) -> bool:
    """Whether training ``cell`` draws dropout masks (found by shape evaluation: nothing is drawn)."""
    if cell.dropout_masks is None:
        return False
    kw = _example_shape(cell.dropout_masks, input_shape)
    return jax.eval_shape(lambda k: cell.dropout_masks(k, params, (batch,), **kw), jax.random.key(0)) is not None


def rnn(
    cell: Cell,
    params: PyTree,
    xs: jax.Array,
    *,
    initial_state: PyTree | None = None,
    mask: jax.Array | None = None,
    constants: PyTree | None = None,
    return_sequences: bool = False,
    go_backwards: bool = False,
    unroll: bool | int = False,
    time_major: bool = False,
    zero_output_for_mask: bool = False,
    training: bool = False,
    dropout_key: jax.Array | None = None,
    remat: bool = False,
    use_fused: bool | str = "auto",
    use_cudnn: bool | str | None = None,
) -> RNNResult:
    """Keras ``RNN(cell)`` semantics over ``jrnn.run``.

    Args:
      cell: a ``jrnn.Cell``.
      params: its params.
      xs: ``(batch, time, *features)`` (``(time, batch, ...)`` with ``time_major``).
      initial_state: the cell's state pytree, or Keras' list of state arrays; zeros if None.
      mask: boolean ``(batch, time)``, True at real steps.
      constants: passed to every step.
      return_sequences: return every step's output, else the last one.
      go_backwards: process the sequence from its end; like Keras, the returned sequence is in
        processing (reversed) order.
      unroll: ``False`` (a scan), ``True`` (fully unrolled) or a number of steps per iteration.
      time_major: the layout of ``xs`` and of the returned sequence.
      zero_output_for_mask: masked steps output zeros (Keras' Bidirectional sets this).
      training: apply dropout (needs ``dropout_key`` when the cell has dropout rates).
      dropout_key: the key the sequence's variational masks are drawn from.
      remat: checkpoint each step (less memory for backward, one more forward).
      use_fused: ``'auto'``, ``True`` (error, with the reason, where the fused kernel cannot run
        this configuration) or ``False``; ``use_cudnn`` is Keras 3's name for it.

    Called outside a ``jax.jit`` (a notebook cell, an eager NNX layer), the layer is compiled once
    per cell object, options and input shapes, and later calls reuse it; inside a caller's jit
    this adds nothing.

    Example:
      >>> import jax, jax.numpy as jnp, jrnn
      >>> cell = jrnn.cells.lstm(3)
      >>> params = cell.init_params(jax.random.key(0), 2)
      >>> result = jrnn.layers.rnn(cell, params, jnp.ones((4, 5, 2)), go_backwards=True)
      >>> result.output.shape, [s.shape for s in jrnn.layers.states_to_list(result.state)]
      ((4, 3), [(4, 3), (4, 3)])
    """
    if use_cudnn is not None:
        use_fused = use_cudnn
    if use_fused not in ("auto", True, False):
        raise ValueError(message("use_fused", "'auto', True or False", repr(use_fused)))
    check_unroll(unroll)
    options = _Options(
        bool(return_sequences),
        bool(go_backwards),
        unroll,
        bool(time_major),
        bool(zero_output_for_mask),
        bool(training),
        bool(remat),
        use_fused,
    )
    mask = None if mask is None else jnp.asarray(mask)
    arrays = (params, jnp.asarray(xs), initial_state, mask, constants, dropout_key)
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays)):  # in a caller's jit, grad, vmap
        return _layer(ByIdentity(cell), options, *arrays)
    return _compiled_layer(ByIdentity(cell), options, *arrays)


class _Options(NamedTuple):
    """``rnn``'s arguments that shape the computation (static under its jit)."""

    return_sequences: bool
    go_backwards: bool
    unroll: bool | int
    time_major: bool
    zero_output_for_mask: bool
    training: bool
    remat: bool
    use_fused: bool | str


def _layer(cell_key: ByIdentity, options: _Options, params, xs, initial_state, mask, constants, dropout_key):
    cell = cell_key.value
    (return_sequences, go_backwards, unroll, time_major, zero_output_for_mask, training, remat, use_fused) = options
    if xs.ndim < 3:
        layout = "(time, batch, *features)" if time_major else "(batch, time, *features)"
        raise ValueError(message("inputs", f"of rank >= 3, laid out {layout}", f"inputs.shape={xs.shape}"))
    time_axis, batch_axis = (0, 1) if time_major else (1, 0)
    batch = xs.shape[batch_axis]
    template = zero_state(
        cell, batch, xs.dtype if jnp.issubdtype(xs.dtype, jnp.floating) else jnp.float32, xs.shape[2:]
    )
    state = template if initial_state is None else state_from_list(template, initial_state)

    fused, reason = choose(cell, use_fused, constants=constants, unroll=unroll, remat=remat)
    if use_fused is True and not fused:
        raise ValueError(message("use_fused", "False or 'auto' for this configuration", f"True, but {reason}"))

    step, masks = cell.step, None
    if training and cell.dropout_masks is not None:
        if dropout_key is None:
            if needs_dropout_key(cell, params, batch, xs.shape[2:]):
                raise ValueError(message("dropout_key", "a PRNG key when training with dropout", "None"))
        else:
            kw = _example_shape(cell.dropout_masks, xs.shape[2:])
            masks = cell.dropout_masks(dropout_key, params, (batch,), xs.dtype, **kw)
            if masks is not None:
                step = partial(cell.step, dropout=masks)

    if fused:
        ys, final = run_fused(
            cell,
            params,
            state,
            xs,
            mask=mask,
            reverse=go_backwards,
            time_major=time_major,
            zero_output_for_mask=zero_output_for_mask,
            dropout=masks,
        )
    else:
        ys, final = run(
            step,
            params,
            state,
            xs,
            mask=mask,
            reverse=go_backwards,
            unroll=unroll if unroll is not False else 1,
            time_major=time_major,
            zero_output_for_mask=zero_output_for_mask,
            constants=constants,
            remat=remat,
        )
    if go_backwards:
        ys = jnp.flip(ys, axis=time_axis)
    if return_sequences:
        return RNNResult(ys, final)
    if ys.shape[time_axis] == 0:  # no step: the last output is the zero output, not a wrapped index
        return RNNResult(jnp.zeros(ys.shape[:time_axis] + ys.shape[time_axis + 1 :], ys.dtype), final)
    return RNNResult(jnp.take(ys, -1, axis=time_axis), final)


# Eager calls run the layer through a jit of its own: the scan's step is a closure made anew in
# every call, so each eager call traced and compiled the loop again (~0.1 s for a small LSTM layer,
# ~0.2 s with dropout). Keyed by the cell object: built-in cells of one layer are one object,
# Linen's, rebuilt in each apply, come from a cache (``jrnn.linen``), stacked cells are cached by
# their cells, NNX user cells by their graph definition (``jrnn.nnx``) and Linen user cells by
# their unbound clone (``jrnn.linen``). Under a transformation the layer is traced inline,
# as before: a jit boundary there changed what autodiff saves (remat at T = 20,000 kept 32 MiB
# instead of 20).
_compiled_layer = jax.jit(_layer, static_argnums=(0, 1))

"""``run``: the cell lifted over time. The only ``lax.scan`` in jrnn."""

from __future__ import annotations

import operator
from functools import partial

import jax
import jax.numpy as jnp

from jrnn._errors import message
from jrnn._masking import check_mask, expand_to
from jrnn._types import PyTree, StepFn, accepts_keyword


def check_unroll(unroll) -> int | bool:
    if isinstance(unroll, bool):
        return unroll
    try:
        value = operator.index(unroll)
    except TypeError:
        value = 0
    if value < 1:
        raise ValueError(message("unroll", "a bool or a positive int", f"unroll={unroll!r}"))
    return value


def _check_state(state: PyTree, returned: PyTree) -> None:
    """The step must return a state of the structure and shapes it was given (a scan carry)."""
    given, got = jax.tree.structure(state), jax.tree.structure(returned)
    if given != got:
        raise ValueError(message("state", f"of the structure the step returns, {got}", f"a state of structure {given}"))
    for path, a, b in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(state), jax.tree.leaves(returned), strict=True
    ):
        if jnp.shape(a) != b.shape or jnp.result_type(a) != b.dtype:
            where = jax.tree_util.keystr(path[0])
            raise ValueError(
                message(
                    f"state{where}",
                    f"of shape {b.shape} and dtype {b.dtype} (what the step returns for it)",
                    f"shape {jnp.shape(a)}, dtype {jnp.result_type(a)}",
                )
            )


def run(
    step: StepFn,
    params: PyTree,
    state: PyTree,
    xs: jax.Array,
    *,
    mask: jax.Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    time_major: bool = False,
    zero_output_for_mask: bool = False,
    constants: PyTree | None = None,
    remat: bool = False,
) -> tuple[jax.Array, PyTree]:
    """Runs ``step`` over the time axis of ``xs``; returns ``(ys, final_state)``.

    Roughly this Python, for ``time_major=False`` and ``reverse=False``::

        ys, prev_y = [], zeros
        for t in range(T):
            y, new_state = step(params, state, xs[:, t])
            if mask is None:
                state = new_state
            else:  # a masked step carries the state and repeats the last output
                state = where(mask[:, t], new_state, state)
                y = where(mask[:, t], y, zeros if zero_output_for_mask else prev_y)
                prev_y = y
            ys.append(y)
        return stack(ys, axis=1), state

    With ``reverse=True`` the loop runs from ``T - 1`` down to 0 and ``ys`` stays aligned with
    ``xs`` (the ``lax.scan`` convention); Keras' ``go_backwards`` returns ``ys`` flipped, which
    ``jrnn.layers`` does. Every ``unroll`` computes the same function.

    Args:
      step: ``step(params, state, x) -> (y, new_state)``, e.g. ``jrnn.cells.lstm(8).step``.
        For dropout, close over the masks: ``functools.partial(cell.step, dropout=masks)``.
      params: the step's parameters pytree.
      state: the initial state; its floating leaves are carried in ``xs.dtype``.
      xs: ``(batch, time, *features)``, or ``(time, *batch, *features)`` with
        ``time_major=True``, which is also the layout of an unbatched sequence ``(time, features)``.
      mask: boolean, True at real steps: ``(batch, time)``, or ``(time, *batch)`` when time-major.
      reverse: process from the last step to the first.
      unroll: steps per scan iteration: a positive int, or ``True`` for a full unroll.
      time_major: whether time is the leading axis of ``xs`` and ``ys``.
      zero_output_for_mask: masked steps output zeros instead of the previous output.
      constants: passed to every step as ``constants=`` (the step must take that keyword).
      remat: checkpoint each step, so backward recomputes the step's activations instead of
        storing them; memory then holds only the carried state per step.

    Returns:
      ``ys`` with the layout of ``xs`` (features replaced by the step's output features), and
      the state after the last processed step.
    """
    if not callable(step):
        raise TypeError(message("step", "a callable step(params, state, x) -> (y, state)", repr(step)))
    unroll = check_unroll(unroll)
    xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(message("xs", "a floating-point array", f"xs.dtype={xs.dtype}"))
    min_rank = 2 if time_major else 3
    layout = "(time, *batch, *features)" if time_major else "(batch, time, *features)"
    if xs.ndim < min_rank:
        raise ValueError(message("xs", f"of rank >= {min_rank}, laid out {layout}", f"xs.shape={xs.shape}"))
    if constants is not None:
        if not accepts_keyword(step, "constants"):
            raise ValueError(message("constants", "None for a step that takes no `constants` keyword", "constants"))
        step = partial(step, constants=constants)
    xs_t = xs if time_major else jnp.swapaxes(xs, 0, 1)
    state = jax.tree.map(lambda a: a.astype(xs.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, state)

    mask_t = None
    if mask is not None:
        if time_major:
            m_ndim = jnp.ndim(mask)
            expected = xs.shape[: max(m_ndim, 1)]
            mask_t = check_mask(mask, expected, "(time, *batch), a prefix of xs.shape")
        else:
            mask_t = check_mask(mask, xs.shape[:2], "(batch, time)").T

    x_spec = jax.ShapeDtypeStruct(xs_t.shape[1:], xs.dtype)
    y_spec, state_spec = jax.eval_shape(step, params, state, x_spec)
    _check_state(state, state_spec)
    carry_prev_y = mask_t is not None and not zero_output_for_mask

    def body(carry, inputs):
        state, prev_y = carry
        x, m = inputs
        y, new_state = step(params, state, x)
        if m is not None:
            new_state = jax.tree.map(lambda n, o: jnp.where(expand_to(m, n), n, o), new_state, state)
            fill = prev_y if carry_prev_y else jnp.zeros_like(y)
            y = jnp.where(expand_to(m, y), y, fill)
        return (new_state, y if carry_prev_y else None), y

    if remat:
        body = jax.checkpoint(body)
    init_y = jnp.zeros(y_spec.shape, y_spec.dtype) if carry_prev_y else None
    (final_state, _), ys = jax.lax.scan(body, (state, init_y), (xs_t, mask_t), reverse=reverse, unroll=unroll)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), final_state

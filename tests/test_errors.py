"""Bad input gets an error that names the argument, the expectation and what was received."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jrnn

KEY = jax.random.key(0)
CELL = jrnn.cells.lstm(4)
PARAMS = CELL.init_params(KEY, 3)
STATE = CELL.init_state((2,))
XS = jnp.ones((2, 5, 3))


def test_wrong_input_rank():
    with pytest.raises(ValueError, match=r"`xs` must be of rank >= 3.*Received: xs.shape=\(5, 3\)"):
        jrnn.run(CELL.step, PARAMS, STATE, XS[0])


def test_feature_size_that_does_not_match_the_params():
    with pytest.raises(ValueError, match=r"`x` must be an array of shape \(\*batch, 3\).*Received: x.shape=\(2, 7\)"):
        jrnn.run(CELL.step, PARAMS, STATE, jnp.ones((2, 5, 7)))


def test_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"`mask` must be of shape \(2, 5\).*Received: mask.shape=\(2, 4\)"):
        jrnn.run(CELL.step, PARAMS, STATE, XS, mask=jnp.ones((2, 4), bool))


def test_mask_of_the_wrong_dtype():
    with pytest.raises(TypeError, match=r"`mask` must be a boolean array.*Received: mask.dtype=float32"):
        jrnn.run(CELL.step, PARAMS, STATE, XS, mask=jnp.ones((2, 5)))


@pytest.mark.parametrize("factory", [jrnn.cells.lstm, jrnn.cells.gru, jrnn.cells.simple_rnn])
@pytest.mark.parametrize("units", [0, -3, 2.5, True])
def test_units_must_be_positive(factory, units):
    with pytest.raises(ValueError, match=r"`units` must be a positive integer. Received: units="):
        factory(units)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"activation": "tanhh"}, r"`activation` must be one of .*Received: 'tanhh'"),
        (
            {"recurrent_activation": "hard_sigmoidd"},
            r"`recurrent_activation` must be one of .*Received: 'hard_sigmoidd'",
        ),
        ({"kernel_initializer": "glorot"}, r"`kernel_initializer` must be one of .*Received: 'glorot'"),
        ({"dropout": 1.0}, r"`dropout` must be a float in \[0, 1\). Received: dropout=1.0"),
        ({"dropout": -0.1}, r"`dropout` must be a float in \[0, 1\). Received: dropout=-0.1"),
        (
            {"recurrent_dropout": 1.5},
            r"`recurrent_dropout` must be a float in \[0, 1\). Received: recurrent_dropout=1.5",
        ),
        ({"implementation": 3}, r"`implementation` must be 1 or 2. Received: implementation=3"),
    ],
)
def test_bad_cell_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        jrnn.cells.lstm(4, **kwargs)


def test_unknown_regularizer_and_constraint_names():
    with pytest.raises(ValueError, match=r"`regularizer` must be one of .*Received: 'l3'"):
        jrnn.regularizers.get("l3")
    with pytest.raises(ValueError, match=r"`constraint` must be one of .*Received: 'maxnorm'"):
        jrnn.constraints.get("maxnorm")
    with pytest.raises(ValueError, match=r"`l2` must be a finite float >= 0. Received: l2=-1"):
        jrnn.regularizers.l2(-1)


@pytest.mark.parametrize("unroll", [0, -1, 1.5, "yes", None])
def test_unroll_must_be_a_bool_or_a_positive_int(unroll):
    with pytest.raises(ValueError, match=r"`unroll` must be a bool or a positive int. Received: unroll="):
        jrnn.run(CELL.step, PARAMS, STATE, XS, unroll=unroll)


def test_integer_inputs():
    with pytest.raises(TypeError, match=r"`xs` must be a floating-point array. Received: xs.dtype=int32"):
        jrnn.run(CELL.step, PARAMS, STATE, jnp.ones((2, 5, 3), jnp.int32))
    with pytest.raises(TypeError, match=r"`x` must be a floating-point array for the lstm cell"):
        CELL.step(PARAMS, STATE, jnp.ones((2, 3), jnp.int32))


def test_initial_state_with_the_wrong_structure():
    with pytest.raises(TypeError, match=r"`state` must be of type LSTMState\(h, c\). Received: tuple"):
        jrnn.run(CELL.step, PARAMS, (STATE.h, STATE.c), XS)
    with pytest.raises(TypeError, match=r"`state` must be of type GRUState\(h\). Received: LSTMState"):
        gru = jrnn.cells.gru(4)
        jrnn.run(gru.step, gru.init_params(KEY, 3), STATE, XS)


def test_initial_state_with_the_wrong_shape():
    with pytest.raises(ValueError, match=r"`state.c` must be of shape \(2, 4\).*Received: state.c.shape=\(2, 5\)"):
        jrnn.run(CELL.step, PARAMS, jrnn.cells.LSTMState(STATE.h, jnp.zeros((2, 5))), XS)
    with pytest.raises(ValueError, match=r"`state.h` must be of shape \(2, 4\).*Received: state.h.shape=\(3, 4\)"):
        jrnn.run(CELL.step, PARAMS, CELL.init_state((3,)), XS)


def test_user_step_whose_state_does_not_match():
    def step(params, state, x):
        return x, {"h": x}

    with pytest.raises(ValueError, match=r"`state` must be of the structure the step returns"):
        jrnn.run(step, None, {"h": jnp.zeros((2, 3)), "c": jnp.zeros((2, 3))}, XS)

    with pytest.raises(ValueError, match=r"`state\['h'\]` must be of shape \(2, 3\).*Received: shape \(2, 4\)"):
        jrnn.run(step, None, {"h": jnp.zeros((2, 4))}, XS)


def test_constants_for_a_step_without_the_keyword():
    def step(params, state, x):
        return x, state

    with pytest.raises(ValueError, match=r"`constants` must be None for a step that takes no `constants` keyword"):
        jrnn.run(step, None, jnp.zeros((2, 3)), XS, constants=jnp.ones(3))


def test_stacked_needs_cells():
    with pytest.raises(ValueError, match=r"`cells` must be a non-empty list of jrnn Cells"):
        jrnn.cells.stacked([])

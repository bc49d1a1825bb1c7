"""Flax Linen modules with the Keras argument surface. Thin: fields around ``jrnn.layers``."""

from jrnn.linen._cells import GRUCell, LSTMCell, SimpleRNNCell
from jrnn.linen._rnn import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    SimpleRNN,
    constrain_params,
    get_weights,
    reset_states,
    set_weights,
)

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "constrain_params",
    "get_weights",
    "reset_states",
    "set_weights",
]

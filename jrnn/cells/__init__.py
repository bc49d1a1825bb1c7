"""Keras recurrent cells as pure ``Cell``s: ``(params, state, x) -> (y, state)``."""

from jrnn.cells._gru import GRUParams, GRUState, gru, gru_step
from jrnn.cells._lstm import LSTMParams, LSTMState, lstm, lstm_step
from jrnn.cells._simple_rnn import SimpleRNNParams, SimpleRNNState, simple_rnn, simple_rnn_step
from jrnn.cells._stacked import output_dim, stacked

__all__ = [
    "GRUParams",
    "GRUState",
    "LSTMParams",
    "LSTMState",
    "SimpleRNNParams",
    "SimpleRNNState",
    "gru",
    "gru_step",
    "lstm",
    "lstm_step",
    "output_dim",
    "simple_rnn",
    "simple_rnn_step",
    "stacked",
]

"""Flax NNX modules with the Keras argument surface. Thin: variables around ``jrnn.layers``."""

from jrnn.nnx._cells import GRUCell, LSTMCell, SimpleRNNCell
from jrnn.nnx._rnn import GRU, LSTM, RNN, ActivityLoss, Carry, SimpleRNN, StackedRNNCells

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "ActivityLoss",
    "Carry",
    "GRUCell",
    "LSTMCell",
    "SimpleRNN",
    "SimpleRNNCell",
    "StackedRNNCells",
]

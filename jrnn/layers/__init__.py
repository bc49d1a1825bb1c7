"""The Keras sequence surface as framework-neutral pure functions (DESIGN.md, floor 3)."""

from jrnn.layers._regularization import WEIGHT_NAMES, activity_penalty, constrain, weight_penalty
from jrnn.layers._rnn import RNNResult, rnn, state_from_list, states_to_list

__all__ = [
    "WEIGHT_NAMES",
    "RNNResult",
    "activity_penalty",
    "constrain",
    "rnn",
    "state_from_list",
    "states_to_list",
    "weight_penalty",
]

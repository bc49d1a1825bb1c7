"""Keras activations by name.

`get(identifier)` turns a Keras name, ``None`` (identity) or a callable into a callable.
``'hard_sigmoid'`` is the Keras-2 function ``clip(0.2 x + 0.5, 0, 1)``; the Keras-3 function
``clip(x / 6 + 0.5, 0, 1)`` is ``'hard_sigmoid_keras3'``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jrnn._errors import message

Activation = Callable[[jax.Array], jax.Array]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def tanh(x):
    return jnp.tanh(x)


def sigmoid(x):
    return jax.nn.sigmoid(x)


def hard_sigmoid(x):
    """Keras 2: ``clip(0.2 x + 0.5, 0, 1)``."""
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype)


def hard_sigmoid_keras3(x):
    """Keras 3: ``clip(x / 6 + 0.5, 0, 1)`` (``relu6(x + 3) / 6``)."""
    return jnp.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(x.dtype)


def relu(x):
    return jax.nn.relu(x)


def elu(x):
    return jax.nn.elu(x)


def selu(x):
    return (_SELU_SCALE * jnp.where(x > 0, x, _SELU_ALPHA * jnp.expm1(x))).astype(x.dtype)


def softplus(x):
    return jax.nn.softplus(x)


def softsign(x):
    return x / (1 + jnp.abs(x))


def exponential(x):
    return jnp.exp(x)


def linear(x):
    return x


_BY_NAME: dict[str, Activation] = {
    f.__name__: f
    for f in (
        tanh,
        sigmoid,
        hard_sigmoid,
        hard_sigmoid_keras3,
        relu,
        elu,
        selu,
        softplus,
        softsign,
        exponential,
        linear,
    )
}


def get(identifier: str | Activation | None, arg: str = "activation") -> Activation:
    """Returns the activation for a Keras name, ``None`` (identity) or a callable."""
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            return _BY_NAME[identifier]
        raise ValueError(message(arg, f"one of {sorted(_BY_NAME)}, None or a callable", repr(identifier)))
    if callable(identifier):
        return identifier
    raise TypeError(message(arg, "a Keras activation name, None or a callable", repr(identifier)))


def serialize(fn: Activation) -> str | Activation:
    """The Keras name of a built-in activation, or the callable itself."""
    for name, f in _BY_NAME.items():
        if f is fn:
            return name
    return fn

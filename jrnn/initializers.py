"""Keras initializers as ``(key, shape, dtype) -> Array``.

Each initializer is a frozen dataclass whose fields are the Keras config, so it hashes (it can be
a static argument) and ``get_config()`` returns Keras field names. ``get`` accepts Keras names in
snake_case (``'glorot_uniform'``) or class form (``'GlorotUniform'``), a Keras config dict, or a
callable.

Fans follow Keras: for a matrix ``(a, b)`` fan_in is ``a`` and fan_out ``b``; a fused RNN kernel
``(n_in, 4 * units)`` therefore has fan_out ``4 * units``. For convolution kernels
``(*k, c_in, c_out)`` both fans are multiplied by ``prod(k)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jrnn._errors import message

Initializer = Callable[..., jax.Array]

# Standard deviation of a unit normal truncated to [-2, 2]; Keras divides by it so that the
# truncated distribution has the requested standard deviation.
_TRUNCATED_STDDEV = 0.87962566103423978


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """Keras' ``(fan_in, fan_out)`` for a weight shape."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class _Base:
    def get_config(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Zeros(_Base):
    def __call__(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype)


@dataclasses.dataclass(frozen=True)
class Ones(_Base):
    def __call__(self, key, shape, dtype=jnp.float32):
        return jnp.ones(shape, dtype)


@dataclasses.dataclass(frozen=True)
class Constant(_Base):
    value: float = 0.0

    def __call__(self, key, shape, dtype=jnp.float32):
        return jnp.full(shape, self.value, dtype)


@dataclasses.dataclass(frozen=True)
class RandomUniform(_Base):
    """U(minval, maxval); Keras' ``'uniform'`` is U(-0.05, 0.05)."""

    minval: float = -0.05
    maxval: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, self.minval, self.maxval)


@dataclasses.dataclass(frozen=True)
class RandomNormal(_Base):
    mean: float = 0.0
    stddev: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.mean + self.stddev * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class TruncatedNormal(_Base):
    """Normal(mean, stddev) with values beyond two standard deviations redrawn (as Keras)."""

    mean: float = 0.0
    stddev: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.mean + self.stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


@dataclasses.dataclass(frozen=True)
class VarianceScaling(_Base):
    """Keras ``VarianceScaling``: variance ``scale / n`` with ``n`` chosen by ``mode``."""

    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(message("scale", "a positive float", f"scale={self.scale!r}"))
        if self.mode not in _MODES:
            raise ValueError(message("mode", f"one of {_MODES}", f"mode={self.mode!r}"))
        if self.distribution not in _DISTRIBUTIONS:
            raise ValueError(message("distribution", f"one of {_DISTRIBUTIONS}", f"distribution={self.distribution!r}"))

    def __call__(self, key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return jax.random.uniform(key, shape, dtype, -limit, limit)
        if self.distribution == "untruncated_normal":
            return math.sqrt(variance) * jax.random.normal(key, shape, dtype)
        stddev = math.sqrt(variance) / _TRUNCATED_STDDEV
        return stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def GlorotUniform() -> VarianceScaling:  # noqa: N802 - Keras class name
    return VarianceScaling(1.0, "fan_avg", "uniform")


def GlorotNormal() -> VarianceScaling:  # noqa: N802
    return VarianceScaling(1.0, "fan_avg", "truncated_normal")


def HeUniform() -> VarianceScaling:  # noqa: N802
    return VarianceScaling(2.0, "fan_in", "uniform")


def HeNormal() -> VarianceScaling:  # noqa: N802
    return VarianceScaling(2.0, "fan_in", "truncated_normal")


def LecunUniform() -> VarianceScaling:  # noqa: N802
    return VarianceScaling(1.0, "fan_in", "uniform")


def LecunNormal() -> VarianceScaling:  # noqa: N802
    return VarianceScaling(1.0, "fan_in", "truncated_normal")


@dataclasses.dataclass(frozen=True)
class Orthogonal(_Base):
    """Keras ``Orthogonal``: QR of a normal matrix with sign correction, times ``gain``.

    The weight is flattened to ``(prod(shape[:-1]), shape[-1])`` and orthogonalized whole, so a
    fused recurrent kernel ``(units, 4 * units)`` has orthonormal rows across all four gates.
    """

    gain: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(message("shape", "at least 2-D for 'orthogonal'", f"shape={shape}"))
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diag(r))[None, :]
        if rows < cols:
            q = q.T
        return (self.gain * q).reshape(shape).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Identity(_Base):
    """``gain * eye(rows, cols)`` for a 2-D shape."""

    gain: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        if len(shape) != 2:
            raise ValueError(message("shape", "2-D for 'identity'", f"shape={tuple(shape)}"))
        return self.gain * jnp.eye(*shape, dtype=dtype)


_FACTORIES: dict[str, Callable[[], Initializer]] = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "uniform": RandomUniform,
    "random_uniform": RandomUniform,
    "normal": RandomNormal,
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal,
    "identity": Identity,
}
_CLASS_NAMES = {
    "Zeros": "zeros",
    "Ones": "ones",
    "Constant": "constant",
    "RandomUniform": "uniform",
    "RandomNormal": "normal",
    "TruncatedNormal": "truncated_normal",
    "VarianceScaling": "variance_scaling",
    "GlorotUniform": "glorot_uniform",
    "GlorotNormal": "glorot_normal",
    "HeUniform": "he_uniform",
    "HeNormal": "he_normal",
    "LecunUniform": "lecun_uniform",
    "LecunNormal": "lecun_normal",
    "Orthogonal": "orthogonal",
    "Identity": "identity",
}


def get(identifier: str | dict | Initializer, arg: str = "initializer") -> Initializer:
    """Returns an initializer for a Keras name, a Keras config dict or a callable."""
    if isinstance(identifier, dict) and "class_name" in identifier:
        name = _CLASS_NAMES.get(identifier["class_name"], identifier["class_name"])
        if name in _FACTORIES:
            config = identifier.get("config") or {}
            config = {k: v for k, v in config.items() if k != "seed"}
            factory = _FACTORIES[name]
            return factory(**config) if isinstance(factory, type) else factory()
    elif isinstance(identifier, str):
        name = _CLASS_NAMES.get(identifier, identifier)
        if name in _FACTORIES:
            return _FACTORIES[name]()
    elif callable(identifier):
        return identifier
    raise ValueError(
        message(
            arg,
            f"one of {sorted(_FACTORIES)} (or its Keras class name), a Keras config dict or a callable",
            repr(identifier),
        )
    )


# Keras' function-style aliases.
zeros, ones, uniform, normal = Zeros(), Ones(), RandomUniform(), RandomNormal()
truncated_normal, orthogonal, identity = TruncatedNormal(), Orthogonal(), Identity()
glorot_uniform, glorot_normal = GlorotUniform(), GlorotNormal()
he_uniform, he_normal = HeUniform(), HeNormal()
lecun_uniform, lecun_normal = LecunUniform(), LecunNormal()
constant = Constant

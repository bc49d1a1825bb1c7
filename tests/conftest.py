import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras is an oracle; it must use JAX.

import jax
import pytest


@pytest.fixture(autouse=True)
def strict_numerics():
    """STYLE.md: strict dtype promotion and rank promotion 'raise' around jrnn code."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield

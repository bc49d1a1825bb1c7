import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras is an oracle; it must use JAX.

# Most of the suite's time is XLA:CPU compiling small programs, and most of that is LLVM
# optimizing the generated code, which the tests do not time. Without LLVM's optimizations (the
# HLO passes, fusion and buffer assignment are the same) tests/test_kernels.py took 124 s against
# 221. Set before any backend starts; the notebooks' kernels inherit it. Runs at the production
# level with XLA_FLAGS=--xla_backend_optimization_level=3 (any level given here is kept).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import pytest


@pytest.fixture(autouse=True)
def strict_numerics():
    """STYLE.md: strict dtype promotion and rank promotion 'raise' around jrnn code."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield

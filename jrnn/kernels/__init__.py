"""Fused recurrent kernels on the same params pytrees as ``jrnn.cells`` (cuDNN's split of work).

Dispatch returns ``(eligible, reason)`` and never uses exceptions to choose a path.
"""

from jrnn.kernels._fused import choose, choose_kernel, eligible, run_fused
from jrnn.kernels._pallas import pallas_eligible

__all__ = ["choose", "choose_kernel", "eligible", "pallas_eligible", "run_fused"]

"""Fused recurrent kernels on the same params pytrees as ``jrnn.cells`` (cuDNN's split of work).

Dispatch returns ``(eligible, reason)`` and never uses exceptions to choose a path.
"""

from jrnn.kernels._fused import choose, eligible, run_fused

__all__ = ["choose", "eligible", "run_fused"]

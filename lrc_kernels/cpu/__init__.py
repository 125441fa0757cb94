"""Numba CPU backend: SRP window histograms and the priority-stack engine.

Both functions have the signatures and semantics of their namesakes in
:mod:`lrc_kernels.reference`.
"""

from ._srp import window_hist_table
from ._stack import stack_stats_table

__all__ = ["window_hist_table", "stack_stats_table"]

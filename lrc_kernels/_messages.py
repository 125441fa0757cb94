"""Values as error messages print them: plain numbers, never ``np.float64(1.79)``.

NumPy 2 scalars repr as ``np.float64(1.79)`` and arrays as ``array([...])``; messages that
show a user's value pass it through :func:`plain` first (``f"got {plain(v)!r}"``), which
keeps the quotes of strings and prints numbers and lists of numbers as Python does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["plain"]


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers and arrays as (nested) lists.

    Lists and tuples are converted element by element; anything else is returned as is.

    Examples
    --------
    >>> import numpy as np
    >>> f"{plain(np.float64(1.5))!r}, {plain(np.arange(3))!r}, {plain('lru')!r}"
    "1.5, [0, 1, 2], 'lru'"
    """
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value

"""THE tolerance rule (contract §6.1): ``within_tolerance`` and its element-wise form for
arrays. Comparison, restore planning and restore verification all import it from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np


def _as_float(value: Any) -> float | None:
    """The value as a float when the contract's rule converts it (numbers, bools, numeric
    strings), else None."""
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_ARRAY_TYPES = (list, tuple, np.ndarray)


def is_array(value: Any) -> TypeGuard[list[Any] | tuple[Any, ...] | np.ndarray]:
    return isinstance(value, _ARRAY_TYPES)


@dataclass(frozen=True, slots=True)
class ArrayDiff:
    """Element-wise comparison of two arrays."""

    within: bool
    differing: int
    max_abs_delta: float | None


def array_compare(
    v1: Sequence[Any] | np.ndarray,
    v2: Sequence[Any] | np.ndarray,
    *,
    abs_tol: float,
    rel_tol: float,
):
    """Compare two arrays element by element with the scalar rule.

    Elements beyond the shorter length all count as differing. Numeric arrays are compared
    with numpy; null elements (stored NaN) match each other and nothing else.
    """
    n1, n2 = len(v1), len(v2)
    n = min(n1, n2)
    extra = abs(n1 - n2)
    a = _numeric_array(v1[:n] if not isinstance(v1, np.ndarray) else v1[:n])
    b = _numeric_array(v2[:n] if not isinstance(v2, np.ndarray) else v2[:n])
    if a is None or b is None:
        differing = sum(
            1
            for x, y in zip(v1[:n], v2[:n], strict=True)
            if not within_tolerance(x, y, abs_tol=abs_tol, rel_tol=rel_tol)
        )
        return ArrayDiff(within=differing == 0 and extra == 0, differing=differing + extra,
                         max_abs_delta=None)  # fmt: skip
    delta = np.abs(a - b)
    both_null = np.isnan(a) & np.isnan(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = delta <= abs_tol
        if rel_tol > 0:
            ok |= (a != 0) & (delta / np.abs(a) <= rel_tol)
    ok |= both_null
    differing = int(n - int(np.count_nonzero(ok))) + extra
    finite = delta[np.isfinite(delta)]
    max_delta = float(finite.max()) if finite.size else None
    return ArrayDiff(within=differing == 0, differing=differing, max_abs_delta=max_delta)


def _numeric_array(seq: Any) -> np.ndarray | None:
    if isinstance(seq, np.ndarray) and seq.dtype.kind in "fiub":
        return seq.astype(float, copy=False)
    out = np.empty(len(seq), dtype=float)
    for i, item in enumerate(seq):
        if item is None:
            out[i] = math.nan
        elif isinstance(item, bool | int | float):
            out[i] = item
        else:
            return None
    return out


def within_tolerance(v1: Any, v2: Any, *, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """THE tolerance rule (contract §6.1), base = ``v1`` (snapshot 1, or the saved value).

    1. Both null: match; exactly one null: mismatch.
    2. Two strings (enum labels included): exact equality.
    3. Arrays: element-wise with this rule, equal lengths required.
    4. Both convert to float (numbers, bools, numeric strings): ``d = |f1 - f2|`` matches
       when ``d <= abs_tol``, or when ``rel_tol > 0``, ``f1 != 0`` and ``d/|f1| <= rel_tol``.
       NaN never matches.
    5. Two tables (pvAccess NTTable values, ``monitor.values.table_value``): cell by cell with
       this rule, the same columns and lengths required (``table_differing_cells``).
    6. Otherwise plain equality.
    """
    t1, t2 = type(v1), type(v2)
    if t1 is float and t2 is float:  # the common case, first
        d = abs(v1 - v2)
        if d <= abs_tol:
            return True
        return rel_tol > 0 and v1 != 0 and d / abs(v1) <= rel_tol
    if v1 is None or v2 is None:
        return v1 is None and v2 is None
    if t1 is str and t2 is str:
        return v1 == v2
    if is_array(v1) or is_array(v2):
        if not (is_array(v1) and is_array(v2)):
            return False
        return array_compare(v1, v2, abs_tol=abs_tol, rel_tol=rel_tol).within
    if t1 is dict and t2 is dict and "columns" in v1 and "columns" in v2:
        return table_differing_cells(v1, v2, abs_tol=abs_tol, rel_tol=rel_tol) == 0
    f1, f2 = _as_float(v1), _as_float(v2)
    if f1 is not None and f2 is not None:
        d = abs(f1 - f2)
        if d <= abs_tol:
            return True
        return rel_tol > 0 and f1 != 0 and d / abs(f1) <= rel_tol
    return v1 == v2


def table_differing_cells(
    t1: dict[str, Any], t2: dict[str, Any], *, abs_tol: float = 0.0, rel_tol: float = 0.0
) -> int | None:
    """How many cells of two tables differ (``within_tolerance`` per cell); None when their
    shapes differ (other columns, or a column of another length)."""
    c1, c2 = t1.get("columns") or {}, t2.get("columns") or {}
    if list(c1) != list(c2):
        return None
    differing = 0
    for name, cells1 in c1.items():
        cells2 = c2[name]
        if len(cells1) != len(cells2):
            return None
        for a, b in zip(cells1, cells2, strict=True):
            if not within_tolerance(a, b, abs_tol=abs_tol, rel_tol=rel_tol):
                differing += 1
    return differing

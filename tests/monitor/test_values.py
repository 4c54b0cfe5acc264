"""monitor.values: the finite check of arrays, and what storage makes of them."""

import pytest

from monitor import values
from snapshots.storage import _pg_array

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([1.0, 2.5, -3.0], True),
        ([1, 2, 3], True),
        ([1, 2.5], True),
        ([1.0, NAN, 2.0], False),
        ([INF, -INF], False),  # the sum is NaN
        ([1.0, -INF], False),
        ([1e308, 1e308], False),  # finite, but the sum overflows: checked one by one instead
        ([1.0, 10**400], False),  # int too large for a float
        ([1.0, None], False),
        ([True, 1.0], False),  # bools are not numbers here
        (["a", "b"], False),
        ([], False),
    ],
)
def test_all_finite(items, expected):
    assert values.all_finite(items) is expected


def test_clean_replaces_non_finite_array_elements_only():
    entry = {"value": [1.0, NAN, 2.0, -INF], "connected": True}
    cleaned = values.clean(entry)
    assert cleaned["value"] == [1.0, None, 2.0, None]
    assert cleaned["error"] == values.NON_FINITE
    fine = {"value": [1e308, 1e308, 0.5], "connected": True}
    assert values.clean(fine) is fine  # overflowing sum, every element finite


@pytest.mark.parametrize(
    ("items", "literal", "bad"),
    [
        ([1.0, 2.5], "{1.0,2.5}", False),
        ([1, 2], "{1.0,2.0}", False),
        ([1.0, NAN, None], "{1.0,NULL,NULL}", True),
        ([1e308, 1e308], "{1e+308,1e+308}", False),
        ([True, 0], "{1.0,0.0}", False),
        ([], "{}", False),
    ],
)
def test_pg_array(items, literal, bad):
    assert _pg_array(items) == (literal, bad)


def test_finite_through_nested_lists():
    import numpy as np

    assert values.finite(NAN) is None and values.finite(-INF) is None
    assert values.finite(np.float64("nan")) is None and values.finite(np.float64(2.5)) == 2.5
    assert values.finite([1.0, [NAN, 2], "x"]) == [1.0, [None, 2], "x"]
    same = [1.0, 2.0]
    assert values.finite(same) is same  # all finite: no copy
    assert values.finite("nan") == "nan" and values.finite(None) is None

"""Comparison: the tolerance rule, arrays, enums, strings, one-sided rows, filters, live."""

from __future__ import annotations

import math
import uuid

import pytest

from monitor import events, values
from pvs.models import PV
from snapshots import compare, tolerance
from snapshots.compare import CompareFilters
from snapshots.models import Snapshot, SnapshotValue, ValueKind, ValueSource
from snapshots.tolerance import within_tolerance
from squirrel.exceptions import NotFound
from tags.models import Tag, TagGroup

# --- the rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("v1", "v2", "abs_tol", "rel_tol", "expected"),
    [
        (None, None, 0, 0, True),
        (None, 1.0, 0, 0, False),
        (1.0, None, 5, 5, False),
        (1.0, 1.0, 0, 0, True),  # abs 0 still matches equality
        (1.0, 1.1, 0, 0, False),
        (1.0, 1.1, 0.1000001, 0, True),
        (1.0, 1.2, 0.1, 0, False),
        (100.0, 101.0, 0, 0.01, True),  # base is v1: 1/100
        (101.0, 100.0, 0, 0.00991, True),  # 1/101 = 0.0099..
        (100.0, 101.0, 0, 0.00991, False),  # 1/100 with base 100
        (0.0, 0.001, 0, 0.5, False),  # rel with base 0 never matches
        (0.0, 0.0, 0, 0.5, True),
        (math.nan, math.nan, 1, 1, False),  # NaN never matches
        (1.0, math.inf, 1e308, 1, False),
        (True, 1, 0, 0, True),  # bools count as numbers
        (1, "1.0", 0, 0, True),  # a numeric string against a number converts
        ("1.0", "1", 0, 0, False),  # two strings: exact
        ("ON", "ON", 0, 0, True),
        ("ON", "OFF", 10, 10, False),
        ({"a": 1}, {"a": 1}, 0, 0, True),  # not convertible: equality
    ],
)
def test_within_tolerance(v1, v2, abs_tol, rel_tol, expected):
    assert within_tolerance(v1, v2, abs_tol=abs_tol, rel_tol=rel_tol) is expected


def test_arrays_compare_element_wise():
    assert within_tolerance([1.0, 2.0], [1.0, 2.0])
    assert not within_tolerance([1.0, 2.0], [1.0, 2.5])
    assert within_tolerance([1.0, 2.0], [1.0, 2.5], abs_tol=0.5)
    assert not within_tolerance([1.0, 2.0], [1.0, 2.0, 3.0])  # lengths differ
    assert not within_tolerance([1.0], 1.0)  # array against scalar
    assert within_tolerance([None, 1.0], [None, 1.0])  # null elements match each other
    assert within_tolerance(["a", "b"], ["a", "b"])
    assert not within_tolerance(["a", "b"], ["a", "c"])
    diff = tolerance.array_compare([1.0, 2.0, 3.0, 4.0], [1.0, 2.5, 3.0], abs_tol=0, rel_tol=0)
    assert (diff.within, diff.differing, diff.max_abs_delta) == (False, 2, 0.5)
    diff = tolerance.array_compare([100.0, 200.0], [101.0, 203.0], abs_tol=0, rel_tol=0.01)
    assert (diff.within, diff.differing, diff.max_abs_delta) == (False, 1, 3.0)


# --- snapshots in the database -------------------------------------------------------------


def _pv(sp: str | None, rb: str | None = None, *, abs_tol=0.0, rel_tol=0.0) -> PV:
    return PV.objects.create(
        setpoint_address=sp, readback_address=rb, abs_tolerance=abs_tol, rel_tolerance=rel_tol
    )


def _side(prefix: str, value, *, source=ValueSource.CACHE, error=None, connected=True):
    """Typed columns for one side, as the storage maps values (snapshots.models.ValueKind)."""
    cols: dict = {f"{prefix}_source": source, f"{prefix}_connected": connected}
    if error:
        cols[f"{prefix}_error"] = error
    if value is None:
        cols[f"{prefix}_kind"] = ValueKind.NONE
    elif isinstance(value, tuple):  # (index, label) of an enum
        cols.update({f"{prefix}_kind": ValueKind.ENUM, f"{prefix}_num": value[0]})
        cols[f"{prefix}_text"] = value[1]
    elif isinstance(value, str):
        cols.update({f"{prefix}_kind": ValueKind.STRING, f"{prefix}_text": value})
    elif isinstance(value, list):
        cols.update({f"{prefix}_kind": ValueKind.FLOAT_ARRAY, f"{prefix}_array": value})
    elif isinstance(value, int):
        cols.update({f"{prefix}_kind": ValueKind.INT, f"{prefix}_num": float(value)})
    else:
        cols.update({f"{prefix}_kind": ValueKind.FLOAT, f"{prefix}_num": value})
    return cols


def _snapshot(title: str, rows: list[tuple[PV, object, object]], **side_opts) -> Snapshot:
    snap = Snapshot.objects.create(title=title, pv_count=len(rows))
    objs = []
    for pv, sp, rb in rows:
        cols = {}
        if pv.setpoint_address:
            cols.update(_side("sp", sp, **side_opts))
        if pv.readback_address:
            cols.update(_side("rb", rb, **side_opts))
        objs.append(
            SnapshotValue(
                snapshot=snap,
                pv=pv,
                pv_name=pv.name,
                setpoint_address=pv.setpoint_address,
                readback_address=pv.readback_address,
                **cols,
            )
        )
    SnapshotValue.objects.bulk_create(objs)
    return snap


@pytest.fixture
def pvs(db):
    return {
        "abs": _pv("T:ABS", "T:ABS:RBV", abs_tol=0.5),
        "rel": _pv("T:REL", abs_tol=0.0, rel_tol=0.01),
        "enum": _pv("T:ENUM", "T:ENUM:RBV"),
        "str": _pv("T:STR"),
        "wave": _pv("T:WAVE", abs_tol=0.1),
        "ro": _pv(None, "T:RO"),
        "only1": _pv("T:ONLY1"),
        "only2": _pv("T:ONLY2"),
    }


def _rows(pvs, overrides):
    base = {
        "abs": (1.0, 1.0),
        "rel": (100.0, None),
        "enum": ((1, "ON"), (1, "ON")),
        "str": ("mode-1", None),
        "wave": ([1.0, 2.0, 3.0], None),
        "ro": (None, 7.0),
    }
    base.update(overrides)
    return [(pvs[k], sp, rb) for k, (sp, rb) in base.items()]


@pytest.mark.django_db
def test_snapshot_compare_rules_and_shape(pvs):
    s1 = _snapshot("one", [*_rows(pvs, {}), (pvs["only1"], 1.0, None)])
    s2 = _snapshot(
        "two",
        [
            *_rows(
                pvs,
                {
                    "abs": (1.4, 1.6),  # setpoint within 0.5, readback not
                    "rel": (100.9, None),  # within 1 % of snapshot 1's value
                    "enum": ((0, "OFF"), (1, "ON")),  # label differs
                    "str": ("mode-1", None),
                    "wave": ([1.0, 2.05, 3.5, 4.0], None),
                    "ro": (None, 7.0),
                },
            ),
            (pvs["only2"], 2.0, None),
        ],
    )
    result = compare.snapshot_compare(
        snapshot1_id=str(s1.pk), snapshot2_id=str(s2.pk), filters=CompareFilters()
    ).to_wire()
    assert set(result) == {
        "snapshot1Id",
        "snapshot2Id",
        "differences",
        "matchCount",
        "differenceCount",
        "summary",
    }
    assert result["snapshot1Id"] == str(s1.pk) and result["snapshot2Id"] == str(s2.pk)
    by_name = {d["pvName"]: d for d in result["differences"]}
    assert set(by_name) == {"T:ABS", "T:ENUM", "T:WAVE", "T:ONLY1", "T:ONLY2"}
    assert result["matchCount"] == 3  # rel, str, ro
    assert result["differenceCount"] == 5
    assert result["matchCount"] + result["differenceCount"] == 8  # the union
    for d in result["differences"]:
        assert {"pvId", "pvName", "value1", "value2", "withinTolerance"} <= set(d)
        assert d["withinTolerance"] is False
    absd = by_name["T:ABS"]
    assert (absd["value1"], absd["value2"]) == (1.0, 1.4)  # setpoint values
    assert absd["setpoint"]["withinTolerance"] is True
    assert absd["readback"]["withinTolerance"] is False
    enum = by_name["T:ENUM"]
    assert (enum["value1"], enum["value2"]) == (1, 0)  # the wire value is the index
    assert (enum["setpoint"]["label1"], enum["setpoint"]["label2"]) == ("ON", "OFF")
    wave = by_name["T:WAVE"]["setpoint"]
    assert wave["differingElements"] == 2  # 3.0 vs 3.5 and the extra element
    assert wave["maxAbsDelta"] == pytest.approx(0.5)
    only1 = by_name["T:ONLY1"]
    assert (only1["value1"], only1["value2"], only1["inSnapshot2"]) == (1.0, None, False)
    assert by_name["T:ONLY2"]["pvId"] == str(pvs["only2"].pk)
    assert result["summary"] == {
        "total": 8,
        "onlyIn1": 1,
        "onlyIn2": 1,
        "setpointDifferences": 4,
        "readbackDifferences": 1,
    }


@pytest.mark.django_db
def test_enum_compares_by_label_not_index(pvs):
    # Same label under a different index (labels reordered): a match.
    s1 = _snapshot("a", [(pvs["enum"], (1, "ON"), (1, "ON"))])
    s2 = _snapshot("b", [(pvs["enum"], (2, "ON"), (1, "ON"))])
    result = compare.snapshot_compare(
        snapshot1_id=str(s1.pk), snapshot2_id=str(s2.pk), filters=CompareFilters()
    )
    assert (result.match_count, result.difference_count) == (1, 0)


@pytest.mark.django_db
def test_tolerance_base_is_snapshot_one(pvs):
    # rel 1 %: |100-101.5|/100 = 1.5 % > 1 %; other way |101.5-100|/101.5 = 1.48 %: both out,
    # but 100 vs 100.95 (0.95 %) in, and 100.95 vs 100 (0.94 %) in.
    s1 = _snapshot("a", [(pvs["rel"], 100.0, None)])
    s2 = _snapshot("b", [(pvs["rel"], 100.95, None)])
    s3 = _snapshot("c", [(pvs["rel"], 99.0, None)])  # 1/99 = 1.01 % with base 99
    f = CompareFilters()
    assert (
        compare.snapshot_compare(
            snapshot1_id=str(s1.pk), snapshot2_id=str(s2.pk), filters=f
        ).match_count
        == 1
    )
    assert (
        compare.snapshot_compare(
            snapshot1_id=str(s1.pk), snapshot2_id=str(s3.pk), filters=f
        ).match_count
        == 1
    )  # base 100: 1 % exactly
    assert (
        compare.snapshot_compare(
            snapshot1_id=str(s3.pk), snapshot2_id=str(s1.pk), filters=f
        ).difference_count
        == 1
    )  # base 99: 1.01 %


@pytest.mark.django_db
def test_filters_only_different_tags_quality(pvs):
    group = TagGroup.objects.create(name="Area")
    tag = Tag.objects.create(name="LI22", group=group)
    pvs["abs"].tags.add(tag)
    pvs["rel"].tags.add(tag)
    s1 = _snapshot("a", _rows(pvs, {}))
    s2 = _snapshot("b", _rows(pvs, {"abs": (3.0, 1.0)}), source=ValueSource.DIRECT)
    everything = compare.snapshot_compare(
        snapshot1_id=str(s1.pk),
        snapshot2_id=str(s2.pk),
        filters=CompareFilters(only_different=False),
    ).to_wire()
    assert len(everything["differences"]) == 6
    assert sum(d["withinTolerance"] for d in everything["differences"]) == 5
    tagged = compare.snapshot_compare(
        snapshot1_id=str(s1.pk),
        snapshot2_id=str(s2.pk),
        filters=CompareFilters(only_different=False, tag_ids=(str(tag.pk),)),
    )
    assert {e["pvName"] for e in tagged.entries} == {"T:ABS", "T:REL"}
    assert (tagged.match_count, tagged.difference_count) == (1, 1)
    none = compare.snapshot_compare(
        snapshot1_id=str(s1.pk),
        snapshot2_id=str(s2.pk),
        filters=CompareFilters(qualities=("failed",)),
    )
    assert none.match_count + none.difference_count == 0
    reread = compare.snapshot_compare(
        snapshot1_id=str(s1.pk),
        snapshot2_id=str(s2.pk),
        filters=CompareFilters(qualities=("reread",)),
    )
    assert reread.match_count + reread.difference_count == 6
    assert reread.entries[0]["setpoint"]["quality2"] == "reread"


@pytest.mark.django_db
def test_quality_of_failed_and_stale_sides(pvs):
    s1 = _snapshot("a", [(pvs["str"], None, None)], error="No answer", connected=False)
    s2 = _snapshot("b", [(pvs["str"], "x", None)], error="Direct read failed", connected=False)
    result = compare.snapshot_compare(
        snapshot1_id=str(s1.pk), snapshot2_id=str(s2.pk), filters=CompareFilters()
    )
    (entry,) = result.entries
    assert (entry["setpoint"]["quality1"], entry["setpoint"]["quality2"]) == ("failed", "stale")
    assert (entry["value1"], entry["value2"]) == (None, "x")


@pytest.mark.django_db
def test_deleted_pv_rows_compare_with_zero_tolerance(pvs):
    s1 = _snapshot("a", [(pvs["abs"], 1.0, 1.0)])
    s2 = _snapshot("b", [(pvs["abs"], 1.2, 1.0)])
    pvs["abs"].delete()  # rows keep pv_name, pv_id becomes null; tolerance falls back to 0
    result = compare.snapshot_compare(
        snapshot1_id=str(s1.pk), snapshot2_id=str(s2.pk), filters=CompareFilters()
    )
    (entry,) = result.entries
    assert entry["pvId"] is None and entry["pvName"] == "T:ABS"
    assert result.difference_count == 1


@pytest.mark.django_db
def test_missing_and_malformed_snapshots_are_not_found(pvs):
    s1 = _snapshot("a", [])
    with pytest.raises(NotFound, match="Snapshot nope not found"):
        compare.snapshot_compare(
            snapshot1_id=str(s1.pk), snapshot2_id="nope", filters=CompareFilters()
        )
    with pytest.raises(NotFound):
        compare.snapshot_compare(
            snapshot1_id=str(uuid.uuid4()), snapshot2_id=str(s1.pk), filters=CompareFilters()
        )
    with pytest.raises(NotFound):
        compare.snapshot_compare_live(snapshot_id="x", filters=CompareFilters())


@pytest.mark.django_db
def test_compare_live_reads_the_cache(pvs, redis_client):
    s1 = _snapshot("a", _rows(pvs, {}))
    now = 1_769_555_000.0
    entries: dict[str, values.Entry] = {
        "T:ABS": {"value": 1.2, "connected": True, "updated_at": now},
        "T:ABS:RBV": {"value": 1.0, "connected": True, "updated_at": now},
        "T:REL": {"value": 100.5, "connected": True, "updated_at": now},
        "T:ENUM": {"value": "OFF", "index": 0, "connected": True, "updated_at": now},
        "T:ENUM:RBV": {"value": "ON", "index": 1, "connected": True, "updated_at": now},
        "T:STR": {"value": "mode-1", "connected": False, "updated_at": now},  # disconnected
        "T:WAVE": {"value": [1.0, 2.0, 3.0], "connected": True, "updated_at": now},
        # T:RO not cached at all
    }
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in entries.items()})
    result = compare.snapshot_compare_live(snapshot_id=str(s1.pk), filters=CompareFilters())
    wire = result.to_wire()
    assert wire["snapshot2Id"] == "live"
    by_name = {d["pvName"]: d for d in wire["differences"]}
    assert set(by_name) == {"T:ENUM", "T:STR", "T:RO"}
    assert by_name["T:ENUM"]["value2"] == 0
    assert by_name["T:ENUM"]["setpoint"]["label2"] == "OFF"
    assert by_name["T:STR"]["value2"] is None  # disconnected live value counts as null
    assert by_name["T:RO"]["readback"]["quality2"] == "failed"
    assert wire["matchCount"] == 3

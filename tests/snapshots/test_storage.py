"""snapshots.storage: entries -> typed columns with COPY, and back."""

from __future__ import annotations

import pytest

from monitor import values
from pvs.models import PV
from snapshots.codec import meta_digest
from snapshots.models import SnapshotValue, ValueKind, ValueMeta, ValueSource
from snapshots.storage import snapshot_value_entries, snapshot_value_rows
from tests.snapshots.factories import NOW, captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db


def _pv(sp: str | None, rb: str | None = None) -> PV:
    return PV.objects.create(setpoint_address=sp, readback_address=rb)


def test_every_kind_maps_to_typed_columns_and_back():
    meta = {"units": "mA", "precision": 3, "upper_ctrl_limit": 10.0, "lower_ctrl_limit": -10.0}
    pvs = {
        "float": _pv("A:FLOAT", "A:FLOAT:RBV"),
        "int": _pv("A:INT"),
        "str": _pv("A:STR"),
        "enum": _pv("A:ENUM"),
        "farr": _pv("A:FARR"),
        "iarr": _pv("A:IARR"),
        "sarr": _pv("A:SARR"),
        "nan": _pv("A:NAN"),
        "nanarr": _pv("A:NANARR"),
        "failed": _pv("A:FAILED"),
        "ro": _pv(None, "A:RO:RBV"),
    }
    enum_strs = ["Off", "On"]
    rows = [
        captured(pvs["float"], entry(1.5, **meta), entry(1.25, **meta, status=3, severity=2)),
        captured(pvs["int"], entry(7)),
        captured(pvs["str"], entry("hello")),
        captured(pvs["enum"], entry("On", index=1, enum_strs=enum_strs)),
        captured(pvs["farr"], entry([1.0, 2.5, -3.0])),
        captured(pvs["iarr"], entry([1, 2, 3])),
        captured(pvs["sarr"], entry(["a", "b"])),
        captured(pvs["nan"], entry(float("nan"))),
        captured(pvs["nanarr"], entry([1.0, float("inf")])),
        captured(
            pvs["failed"],
            {"value": None, "connected": False, "error": "No answer from Channel Access"},
            source=ValueSource.DIRECT,
        ),
        captured(pvs["ro"], None, entry(0.5)),
    ]
    snap = snapshot_seed("kinds", rows)
    assert SnapshotValue.objects.filter(snapshot=snap).count() == len(rows)
    by = {v.pv_name: v for v in SnapshotValue.objects.filter(snapshot=snap)}

    f = by["A:FLOAT"]
    assert (f.sp_kind, f.sp_num, f.sp_status, f.sp_severity, f.sp_ts) == (
        ValueKind.FLOAT,
        1.5,
        0,
        0,
        NOW,
    )
    assert (f.rb_kind, f.rb_num, f.rb_status, f.rb_severity) == (ValueKind.FLOAT, 1.25, 3, 2)
    assert f.sp_meta_id == f.rb_meta_id is not None
    assert (f.sp_source, f.sp_age, f.sp_connected) == (ValueSource.CACHE, 0.5, True)
    m = ValueMeta.objects.get(pk=f.sp_meta_id)
    assert (m.units, m.precision, m.upper_ctrl_limit, m.lower_ctrl_limit) == ("mA", 3, 10.0, -10.0)
    assert (by["A:INT"].sp_kind, by["A:INT"].sp_num, by["A:INT"].sp_meta_id) == (
        ValueKind.INT,
        7.0,
        None,
    )
    assert (by["A:STR"].sp_kind, by["A:STR"].sp_text) == (ValueKind.STRING, "hello")
    e = by["A:ENUM"]
    assert (e.sp_kind, e.sp_num, e.sp_text) == (ValueKind.ENUM, 1.0, "On")
    assert ValueMeta.objects.get(pk=e.sp_meta_id).enum_strs == enum_strs
    assert (by["A:FARR"].sp_kind, by["A:FARR"].sp_array) == (
        ValueKind.FLOAT_ARRAY,
        [1.0, 2.5, -3.0],
    )
    assert (by["A:IARR"].sp_kind, by["A:IARR"].sp_array) == (ValueKind.INT_ARRAY, [1.0, 2.0, 3.0])
    assert (by["A:SARR"].sp_kind, by["A:SARR"].sp_text) == (ValueKind.STRING_ARRAY, '["a", "b"]')
    n = by["A:NAN"]
    assert (n.sp_kind, n.sp_num, n.sp_error) == (ValueKind.NONE, None, values.NON_FINITE)
    na = by["A:NANARR"]
    assert (na.sp_kind, na.sp_array, na.sp_error) == (
        ValueKind.FLOAT_ARRAY,
        [1.0, None],
        values.NON_FINITE,
    )
    x = by["A:FAILED"]
    assert (x.sp_kind, x.sp_source, x.sp_connected) == (ValueKind.NONE, ValueSource.DIRECT, False)
    assert x.sp_error == "No answer from Channel Access"
    assert x.rb_kind is None and x.rb_source is None  # no readback address: nothing captured
    ro = by["A:RO:RBV"]
    assert ro.sp_kind is None and ro.sp_source is None and ro.rb_kind == ValueKind.FLOAT

    # ...and back, in pv_name order
    stored = list(snapshot_value_entries(snapshot_id=snap.pk))
    assert [s.pv_name for s in stored] == sorted(by)
    back = {s.pv_name: s for s in stored}
    assert back["A:FLOAT"].setpoint["value"] == 1.5
    assert back["A:FLOAT"].setpoint["units"] == "mA"
    assert back["A:FLOAT"].readback["status"] == 3
    assert back["A:FLOAT"].pv_id == pvs["float"].pk
    assert back["A:INT"].setpoint["value"] == 7 and isinstance(back["A:INT"].setpoint["value"], int)
    assert back["A:ENUM"].setpoint["value"] == "On"
    assert back["A:ENUM"].setpoint["index"] == 1
    assert back["A:ENUM"].setpoint["enum_strs"] == enum_strs
    assert back["A:IARR"].setpoint["value"] == [1, 2, 3]
    assert back["A:SARR"].setpoint["value"] == ["a", "b"]
    assert back["A:NAN"].setpoint["value"] is None
    assert back["A:NAN"].setpoint["error"] == values.NON_FINITE
    assert back["A:NANARR"].setpoint["value"] == [1.0, None]
    assert back["A:FAILED"].setpoint["connected"] is False
    assert back["A:FAILED"].readback is None
    assert back["A:FAILED"].sp_source == ValueSource.DIRECT
    assert back["A:RO:RBV"].setpoint is None
    assert back["A:RO:RBV"].rb_age == 0.25


def test_metadata_is_deduplicated_across_rows_and_snapshots():
    meta = {"units": "V", "precision": 2}
    rows = [captured(_pv(f"M:{i}"), entry(float(i), **meta)) for i in range(50)]
    snapshot_seed("one", rows)
    snapshot_seed("two", rows)
    digest = meta_digest(("V", 2, None, None, None))
    assert ValueMeta.objects.filter(digest=digest).count() == 1
    ids = set(SnapshotValue.objects.values_list("sp_meta_id", flat=True))
    assert ids == {ValueMeta.objects.get(digest=digest).pk}


def test_values_survive_pv_deletion():
    pv = _pv("GONE:1")
    snap = snapshot_seed("s", [captured(pv, entry(2.0))])
    pv.delete()
    (stored,) = snapshot_value_entries(snapshot_id=snap.pk)
    assert stored.pv_id is None
    assert stored.pv_name == "GONE:1"
    assert stored.setpoint["value"] == 2.0


def test_a_pv_deleted_after_the_catalog_was_read_is_stored_without_its_id():
    """pv_id has no database constraint: the writer nulls ids whose PV is gone."""
    kept, gone = _pv("KEPT:1"), _pv("GONE:2")
    rows = [captured(kept, entry(1.0)), captured(gone, entry(2.0))]
    gone.delete()  # between reading the catalog and writing the values
    snap = snapshot_seed("s", rows)
    by = {v.pv_name: v for v in snapshot_value_entries(snapshot_id=snap.pk)}
    assert by["KEPT:1"].pv_id == kept.pk
    assert by["GONE:2"].pv_id is None
    assert by["GONE:2"].setpoint["value"] == 2.0


def test_write_returns_count_and_empty_snapshot_has_no_rows():
    snap = snapshot_seed("empty", [])
    assert list(snapshot_value_entries(snapshot_id=snap.pk)) == []


def test_reading_streams_across_chunk_boundaries():
    rows = [captured(_pv(f"C:{i:02d}"), entry(float(i))) for i in range(11)]
    snap = snapshot_seed("chunks", reversed(rows))
    stored = list(snapshot_value_entries(snapshot_id=snap.pk, chunk_size=3))
    assert [s.pv_name for s in stored] == [f"C:{i:02d}" for i in range(11)]
    assert [s.setpoint["value"] for s in stored] == [float(i) for i in range(11)]
    assert len({s.id for s in stored}) == 11


def test_value_rows_page_and_filter_across_chunks():
    rows = [captured(_pv(f"R:{i:02d}"), entry(float(i))) for i in range(11)]
    snap = snapshot_seed("rows", rows)
    names = [r[1] for r in snapshot_value_rows(snapshot_id=snap.pk, chunk_size=2)]
    assert names == [f"R:{i:02d}" for i in range(11)]
    page = [r[1] for r in snapshot_value_rows(snapshot_id=snap.pk, limit=4, offset=5)]
    assert page == [f"R:{i:02d}" for i in range(5, 9)]
    found = [r[1] for r in snapshot_value_rows(snapshot_id=snap.pk, name_contains="r:1")]
    assert found == ["R:10"]
    assert [r[1] for r in snapshot_value_rows(snapshot_id=snap.pk, name_contains="%")] == []

"""Decoding the FastAPI Squirrel's stored values (``snapshots.fastapi_import.source``), every
shape its code wrote, and the read-ahead of the source's rows."""

from __future__ import annotations

import json
import threading

import pytest

from snapshots.codec import KIND_FLOAT, QUALITIES, meta_key, side_from_columns
from snapshots.fastapi_import.source import (
    _ahead,
    entry_from_json,
    epoch,
    has_meta,
    raw_value,
    unwrap,
)
from snapshots.models import ValueSource

OBJECT = {"units": None, "value": 26.58, "status": 0, "severity": 0, "precision": None,
          "timestamp": "2026-12-03T08:08:33.263515"}  # fmt: skip
CACHED = {"value": -100.0, "status": None, "severity": None, "timestamp": None}


def test_an_object_keeps_its_alarm_state_and_naive_time_is_utc():
    entry = entry_from_json(json.dumps(OBJECT))
    assert entry == {"value": 26.58, "status": 0, "severity": 0, "timestamp": 1796285313.263515}
    assert not has_meta(entry)


def test_a_double_encoded_value_decodes_like_the_object_and_missing_stays_null():
    text = json.dumps(json.dumps(CACHED))  # the JSONB string the FastAPI cache path stored
    assert isinstance(json.loads(text), str)
    entry = entry_from_json(text)
    assert entry == {"value": -100.0, "status": None, "severity": None, "timestamp": None}
    assert entry_from_json(json.dumps(CACHED)) == entry  # as the source query unwraps it


@pytest.mark.parametrize("text", [None, "null", json.dumps("null")])
def test_sql_null_and_json_null_are_nothing_captured(text):
    assert entry_from_json(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (405, 405),  # a long, or an enum saved as its index
        ("setting 1525", "setting 1525"),
        ([-807.339685, -815.901101], [-807.339685, -815.901101]),  # a waveform
        (None, None),  # a failed read
        ("{not json", "{not json"),  # a string that only looks like JSON
    ],
)
def test_every_value_kind_in_both_encodings(value, expected):
    obj = {**CACHED, "value": value}
    for text in (json.dumps(obj), json.dumps(json.dumps(obj))):
        assert entry_from_json(text)["value"] == expected
        assert raw_value(text) == expected


def test_nan_inside_a_double_encoded_string_is_read():
    text = json.dumps('{"value": NaN, "status": null}')
    entry = entry_from_json(text)
    assert entry["value"] != entry["value"]  # NaN: the codec stores it as NONE with an error


def test_enum_strings_beside_an_index_make_an_enum_and_carry_metadata():
    entry = entry_from_json(json.dumps({"value": 1, "enum_strs": ["Off", "On"], "units": "V"}))
    assert entry["index"] == 1 and entry["value"] == "On" and entry["units"] == "V"
    assert has_meta(entry) and meta_key(entry) == ("V", None, None, None, ("Off", "On"))


def test_a_bare_value_is_its_own_value():
    assert entry_from_json("1.5") == {"value": 1.5}
    assert unwrap(json.dumps(json.dumps([1, 2]))) == [1, 2]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("1970-01-01T00:00:10", 10.0),
        ("1970-01-01T01:00:10+01:00", 10.0),
        (12.5, 12.5),
        ("yesterday", None),
        (None, None),
        (True, None),
    ],
)
def test_timestamps(ts, expected):
    assert epoch(ts) == expected


def test_read_ahead_yields_everything_in_order_and_stops_its_thread():
    before = threading.active_count()
    assert list(_ahead(iter([[1], [2], [3], [4], [5]]))) == [[1], [2], [3], [4], [5]]
    stopped = _ahead(iter(range(100)))
    assert next(stopped) == 0
    stopped.close()  # a consumer that stops early stops the producer
    assert threading.active_count() == before


def test_read_ahead_raises_the_producers_error():
    def chunks():
        yield [1]
        raise RuntimeError("source gone")

    with pytest.raises(RuntimeError, match="source gone"):
        list(_ahead(chunks()))


def test_an_imported_side_has_its_own_quality():
    imported = side_from_columns(KIND_FLOAT, 1.5, None, None, ValueSource.IMPORTED, None, None)
    assert imported is not None and imported.quality == "imported" and imported.wire == 1.5
    assert "imported" in QUALITIES  # the compare filter accepts it

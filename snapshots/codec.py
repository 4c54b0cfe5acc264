"""The one codec of stored snapshot values: entries (``monitor.values``) <-> the typed columns
of ``SnapshotValue``, one side at a time (prefix ``sp_`` for the setpoint, ``rb_`` for the
readback).

Mapping of one side (``snapshots.models.ValueKind``):

=====================  =======================================================
entry is None          every column NULL (nothing captured for this side)
value None             kind NONE; ``error`` says why (read failed, disconnected)
NaN / ±Inf scalar      kind NONE, ``error`` = ``monitor.values.NON_FINITE``
float / int / bool     FLOAT or INT, in ``num``
str                    STRING, in ``text``
enum (``index`` set)   ENUM: ``num`` = index, ``text`` = label
numeric list           FLOAT_ARRAY or INT_ARRAY in ``array`` (NaN/Inf elements NULL,
                       ``error`` = NON_FINITE)
list with a str        STRING_ARRAY, ``text`` holds the JSON list
NTTable (pvAccess)     TABLE, ``text`` holds ``values.table_value`` as JSON
other PVA structure    STRUCT, ``text`` holds its JSON (never restored)
=====================  =======================================================

``status``/``severity`` are smallints, ``ts`` the IOC timestamp (UTC epoch seconds).
Display metadata (units, precision, control limits, enum strings) is stored once per distinct
tuple in ``value_meta``, keyed by the md5 ``digest`` of that tuple, and referenced by id. A side
is *absent* (nothing captured) when its kind, source and error are all NULL.

Layouts (every reader and writer builds its column list from these tuples):

``SIDE_COLUMNS``  a side as stored, in COPY order (``side_row`` encodes an entry to it)
``SIDE_READ``     a side as read back: ``SIDE_COLUMNS`` without ``meta_id``, followed by the
                  joined ``value_meta`` columns -- all of ``META_COLUMNS`` for
                  ``entry_from_columns``, ``DISPLAY_META`` for the API and the export
                  (``serializers.epics_value_dto`` and ``export`` index it by position)
``RAW_SIDE``      what a comparison or a restore plan decodes (``side_from_columns``)

``select_sides``/``META_JOIN`` and ``select_raw``/``absent_sql`` are the SQL built from them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor import values
from monitor.values import Entry
from snapshots.models import ValueKind, ValueMeta, ValueSource

# Plain ints: comparing with IntegerChoices members is measurably slower at 100K sides.
KIND_NONE, KIND_FLOAT, KIND_INT, KIND_STRING, KIND_ENUM = (
    int(ValueKind.NONE),
    int(ValueKind.FLOAT),
    int(ValueKind.INT),
    int(ValueKind.STRING),
    int(ValueKind.ENUM),
)
KIND_FLOAT_ARRAY, KIND_INT_ARRAY, KIND_STRING_ARRAY = (
    int(ValueKind.FLOAT_ARRAY),
    int(ValueKind.INT_ARRAY),
    int(ValueKind.STRING_ARRAY),
)
KIND_TABLE, KIND_STRUCT = int(ValueKind.TABLE), int(ValueKind.STRUCT)
_JSON_KINDS = (KIND_STRING_ARRAY, KIND_TABLE, KIND_STRUCT)
_DIRECT = int(ValueSource.DIRECT)
_IMPORTED = int(ValueSource.IMPORTED)
_NUMERIC_ARRAYS = (KIND_FLOAT_ARRAY, KIND_INT_ARRAY)
SOURCE_NAMES = {
    int(ValueSource.CACHE): "cache",
    int(ValueSource.DIRECT): "direct",
    int(ValueSource.IMPORTED): "imported",
}

# --- layouts and the SQL built from them --------------------------------------------------------

SIDE_COLUMNS = (
    "kind", "num", "text", "array", "status", "severity", "ts", "meta_id", "source", "age",
    "connected", "error",
)  # fmt: skip
SIDE_READ = tuple(c for c in SIDE_COLUMNS if c != "meta_id")
META_COLUMNS = ("units", "precision", "upper_ctrl_limit", "lower_ctrl_limit", "enum_strs")
DISPLAY_META = META_COLUMNS[:4]
DISPLAY_WIDTH = len(SIDE_READ) + len(DISPLAY_META)
"""Columns per side in a row selected with ``select_sides(DISPLAY_META)``."""
RAW_SIDE = ("kind", "num", "text", "array", "source", "connected", "error")
RawSide = tuple[Any, ...]
"""A stored side before decoding, in ``RAW_SIDE`` order."""

META_JOIN = (
    " LEFT JOIN value_meta spm ON spm.id = sv.sp_meta_id"
    " LEFT JOIN value_meta rbm ON rbm.id = sv.rb_meta_id"
)


def select_sides(meta: tuple[str, ...]) -> str:
    """Both sides of ``snapshot_value sv`` as ``SIDE_READ`` then ``meta`` of its value_meta
    row (joined by ``META_JOIN`` as ``spm``/``rbm``): the setpoint side, then the readback."""
    return ", ".join(
        [
            *(f"sv.sp_{c}" for c in SIDE_READ),
            *(f"spm.{c}" for c in meta),
            *(f"sv.rb_{c}" for c in SIDE_READ),
            *(f"rbm.{c}" for c in meta),
        ]
    )


def select_raw(prefix: str) -> str:
    """One side of ``snapshot_value sv`` in ``RAW_SIDE`` order (``prefix`` "sp" or "rb")."""
    return ", ".join(f"sv.{prefix}_{c}" for c in RAW_SIDE)


def absent_sql(prefix: str) -> str:
    """True when nothing was captured for that side of ``snapshot_value sv``."""
    return f"sv.{prefix}_kind IS NULL AND sv.{prefix}_source IS NULL AND sv.{prefix}_error IS NULL"


# --- encoding: entry -> SIDE_COLUMNS ------------------------------------------------------------

EMPTY_SIDE: tuple[None, ...] = (None,) * len(SIDE_COLUMNS)
_META_UNITS_MAX = ValueMeta._meta.get_field("units").max_length or 64
_NO_META = (None, None, None, None, None)


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    if type(x) is not float:
        try:
            x = float(x)
        except (TypeError, ValueError):
            return None
    return x if x - x == 0.0 else None  # NaN and ±Inf give NaN


def _status_int(status: Any) -> int | None:
    """An alarm status as a smallint; a status *name* (some caches hold one) by its index."""
    if status is None or type(status) is int:
        return status
    if isinstance(status, str):
        if status.isdigit():
            return int(status)
        try:
            return values.ALARM_STATUS.index(status)
        except ValueError:
            return None
    try:
        return int(status)
    except (TypeError, ValueError):
        return None


def pg_array(items: list[Any]) -> tuple[str, bool]:
    """A float8[] literal in COPY text form, and whether any element was NaN/Inf/None."""
    if values.all_finite(items):
        return "{" + ",".join(map(repr, map(float, items))) + "}", False
    parts = []
    bad = False
    for x in items:
        f = _finite_or_none(x)
        if f is None:
            parts.append("NULL")
            bad = True
        else:
            parts.append(repr(f))
    return "{" + ",".join(parts) + "}", bad


def _value_columns(entry: Entry) -> tuple[int, float | None, str | None, str | None, str | None]:
    """(kind, num, text, array literal, error) of an entry's value."""
    value = entry.get("value")
    error = entry.get("error")
    if value is None:
        return KIND_NONE, None, None, None, error
    index = entry.get("index")
    if index is not None:
        return KIND_ENUM, float(index), str(value), None, error
    cls = type(value)
    if cls is float:
        if value - value == 0.0:
            return KIND_FLOAT, value, None, None, error
        return KIND_NONE, None, None, None, error or values.NON_FINITE
    if cls is int or cls is bool:
        return KIND_INT, float(value), None, None, error
    if cls is str:
        return KIND_STRING, None, value, None, error
    if isinstance(value, list | tuple):
        items = list(value)
        if any(isinstance(x, str) for x in items):
            return KIND_STRING_ARRAY, None, json.dumps(items, ensure_ascii=False), None, error
        literal, bad = pg_array(items)
        integral = all(x is None or isinstance(x, int) for x in items)
        kind = KIND_INT_ARRAY if integral and items else KIND_FLOAT_ARRAY
        if bad:  # values.clean turned NaN/Inf elements into None
            error = error or values.NON_FINITE
        return kind, None, None, literal, error
    if cls is dict:  # a pvAccess structure (monitor.values)
        kind = KIND_TABLE if entry.get("structure") == values.TABLE else KIND_STRUCT
        return kind, None, json.dumps(values.finite_json(value), ensure_ascii=False), None, error
    if isinstance(value, float):  # a float subclass (numpy.float64)
        return _value_columns({**entry, "value": float(value)})
    if isinstance(value, int):
        return KIND_INT, float(value), None, None, error
    if isinstance(value, bytes):
        return KIND_STRING, None, value.decode("utf-8", "replace"), None, error
    return KIND_STRING, None, str(value), None, error


def side_row(
    entry: Entry | None, source: Any, age: float | None, meta_id: int | None
) -> tuple[Any, ...]:
    """One side's values in ``SIDE_COLUMNS`` order (COPY text form for arrays)."""
    if entry is None:
        return EMPTY_SIDE
    kind, num, text, array, error = _value_columns(entry)
    return (
        kind,
        num,
        text,
        array,
        _status_int(entry.get("status")),
        _status_int(entry.get("severity")),
        _finite_or_none(entry.get("timestamp")),
        meta_id,
        int(source) if source is not None else None,
        _finite_or_none(age),
        entry.get("connected"),
        error,
    )


def meta_key(entry: Entry) -> tuple[Any, ...] | None:
    """The raw metadata of an entry as a hashable key, None when it has none (fast path)."""
    strs = entry.get("enum_strs")
    key = (
        entry.get("units"),
        entry.get("precision"),
        entry.get("upper_ctrl_limit"),
        entry.get("lower_ctrl_limit"),
        tuple(strs) if strs else None,
    )
    return None if key == _NO_META else key


def meta_fields(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """(units, precision, upper, lower, enum_strs) as stored, from a raw ``meta_key``."""
    units, precision, upper, lower, strs = key
    return (
        str(units)[:_META_UNITS_MAX] if units is not None else None,
        int(precision) if precision is not None else None,
        _finite_or_none(upper),
        _finite_or_none(lower),
        [str(s) for s in strs] if strs else None,
    )


def meta_digest(fields: tuple[Any, ...]) -> str:
    """The md5 hex digest that identifies a metadata tuple in ``value_meta``."""
    return hashlib.md5(
        json.dumps(list(fields), ensure_ascii=False).encode(), usedforsecurity=False
    ).hexdigest()


# --- decoding: columns -> values, entries and comparable sides ----------------------------------


def side_value(kind: int | None, num: float | None, text: str | None, array: Any) -> Any:
    """The stored value as in an entry (enum: the label); arrays as lists, None when absent."""
    if kind == KIND_FLOAT:
        return num
    if kind == KIND_INT:
        return int(num) if num is not None else None
    if kind == KIND_STRING:
        return text
    if kind == KIND_ENUM:
        return text if text is not None else (int(num) if num is not None else None)
    if kind == KIND_FLOAT_ARRAY:
        return list(array) if array is not None else None
    if kind == KIND_INT_ARRAY:
        return [None if x is None else int(x) for x in array] if array is not None else None
    if kind in _JSON_KINDS:
        return json.loads(text) if text is not None else None
    return None


def side_wire_value(kind: int | None, num: float | None, text: str | None, array: Any) -> Any:
    """The stored value as on the wire (EpicsValueDTO): an enum as its integer index."""
    if kind == KIND_FLOAT:
        return num
    if kind in (KIND_ENUM, KIND_INT):
        return int(num) if num is not None else None
    if kind == KIND_STRING:
        return text
    if kind == KIND_FLOAT_ARRAY:  # NaN/Inf elements are stored NULL; one from elsewhere goes too
        return values.finite(array)
    if kind == KIND_INT_ARRAY:
        return [None if x is None else int(x) for x in array] if array is not None else None
    if kind in _JSON_KINDS:
        return json.loads(text) if text is not None else None
    return None


def entry_from_columns(cols: tuple[Any, ...]) -> Entry | None:
    """An Entry from one side's columns in ``SIDE_READ + META_COLUMNS`` order, None if absent."""
    kind, num, text, array, status, severity, ts, source, _age, connected, error = cols[:11]
    if kind is None and source is None and error is None:
        return None
    entry: Entry = {
        "value": side_value(kind, num, text, array),
        "status": status,
        "severity": severity,
        "timestamp": ts,
        "connected": bool(connected) if connected is not None else False,
        "error": error,
    }
    if kind == KIND_ENUM and num is not None:
        entry["index"] = int(num)
    elif kind == KIND_TABLE:
        entry["structure"] = values.TABLE
    elif kind == KIND_STRUCT:
        entry["structure"] = values.STRUCT
    units, precision, upper, lower, enum_strs = cols[11:16]
    entry["units"] = units
    entry["precision"] = precision
    entry["upper_ctrl_limit"] = upper
    entry["lower_ctrl_limit"] = lower
    entry["enum_strs"] = list(enum_strs) if enum_strs is not None else None
    return entry


# Quality of one captured side (setpoint or readback), as the completeness counts name it.
QUALITY_LIVE = "live"  # from the cache, fresh and connected
QUALITY_REREAD = "reread"  # read directly over Channel Access
QUALITY_STALE = "stale"  # a value kept although it may be old (read failed, or disconnected)
QUALITY_FAILED = "failed"  # no value at all
QUALITY_IMPORTED = "imported"  # from another Squirrel's database, never read here
QUALITIES = (QUALITY_LIVE, QUALITY_REREAD, QUALITY_STALE, QUALITY_FAILED, QUALITY_IMPORTED)


@dataclass(slots=True)
class Side:
    """One captured side of a row: the wire value, the value compared, and its quality."""

    wire: Any  # as on the wire: enum index, lists for arrays
    comparable: Any  # as compared: enum label, numpy array for numeric arrays
    label: str | None
    quality: str | None  # None when nothing was captured for this side (no address)


def side_from_columns(
    kind: int | None,
    num: float | None,
    text: str | None,
    array: list[float] | None,
    source: int | None,
    connected: bool | None,
    error: str | None,
) -> Side | None:
    """A side from its ``RAW_SIDE`` columns, or None when absent.

    Quality: ``failed`` without a value (a NaN/Inf value read fine is not a failure),
    ``stale`` when a value was kept although the PV was disconnected or its re-read failed,
    else ``reread`` (direct), ``imported`` (from another Squirrel's database) or ``live``
    (cache).
    """
    if kind is None and source is None and error is None:
        return None
    wire = side_wire_value(kind, num, text, array)
    label = None
    comparable: Any
    if kind == KIND_ENUM:
        label = text
        comparable = text if text is not None else wire
    elif kind == KIND_INT:
        comparable = num
    elif kind in _NUMERIC_ARRAYS:
        comparable = (
            None
            if array is None
            else np.array([math.nan if x is None else x for x in array], dtype=float)
        )
    else:
        comparable = wire
    if wire is None and error != values.NON_FINITE:
        quality = QUALITY_FAILED
    elif connected is False or (error and error != values.NON_FINITE):
        quality = QUALITY_STALE
    elif source == _DIRECT:
        quality = QUALITY_REREAD
    elif source == _IMPORTED:
        quality = QUALITY_IMPORTED
    else:
        quality = QUALITY_LIVE
    return Side(wire, comparable, label, quality)


def side_from_entry(entry: Entry | None) -> Side | None:
    """A live cache entry as a side (enum: value is the label, ``index`` the index)."""
    if entry is None:
        return Side(wire=None, comparable=None, label=None, quality=QUALITY_FAILED)
    value = entry.get("value")
    if type(value) is float and value - value == 0.0 and entry.get("connected"):
        return Side(wire=value, comparable=value, label=None, quality=QUALITY_LIVE)  # most PVs
    value = values.clean(entry).get("value")
    connected = bool(entry.get("connected"))
    if not connected:
        value = None
    label = None
    wire = value
    comparable: Any = value
    if entry.get("index") is not None and isinstance(value, str):
        label, wire = value, entry["index"]
    elif isinstance(value, list) and all(
        x is None or isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        comparable = np.array([math.nan if x is None else x for x in value], dtype=float)
    quality = QUALITY_FAILED if value is None else QUALITY_LIVE
    return Side(wire=wire, comparable=comparable, label=label, quality=quality)

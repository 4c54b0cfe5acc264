"""Snapshot value storage: entries (monitor.values) <-> the typed columns of SnapshotValue.

Public API (used by capture, compare, restore and the read API):

``CapturedValue``
    One PV as captured: its id and addresses, the setpoint and readback entries
    (``monitor.values.Entry`` or None when nothing was captured for that side, e.g. no
    address), and per side how the value was obtained (``ValueSource``) and the cached
    value's age at capture.

``snapshot_values_write(*, snapshot, values) -> int``
    Writes every CapturedValue as one ``snapshot_value`` row with PostgreSQL COPY and returns
    the row count. The caller owns the transaction: wrap the snapshot insert and this call in
    ONE ``transaction.atomic()`` so a snapshot is visible only when complete. Takes a SHARE
    lock on ``pv`` until that transaction ends (PV edits wait, reads and other captures don't);
    a ``pv_id`` whose PV is gone is written as NULL.

``snapshot_value_entries(*, snapshot_id) -> Iterator[StoredValue]``
    Reads a snapshot's rows back in ``pv_name`` order, rebuilding the entries, streamed a
    chunk at a time (bounded memory at 50K rows). ``StoredValue`` is a CapturedValue plus the
    row ``id``; ``pv_id`` is None when the PV was deleted since. ``entry_from_columns``,
    ``side_value`` (entry form: an enum as its label) and ``side_wire_value`` (wire form: an
    enum as its index) decode one side's columns.

``snapshot_update(*, snapshot_id, title=None, description=None)`` and
``snapshot_delete(*, snapshot_id)``
    The read API's edits of the snapshot row (None leaves a field unchanged; NotFound on a
    malformed or unknown id). They belong with the other snapshot services in services.py.

Mapping of one side (prefix ``sp_`` or ``rb_``; ``snapshots.models.ValueKind``):

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
=====================  =======================================================

``status``/``severity`` are smallints, ``ts`` the IOC timestamp (UTC epoch seconds).
Display metadata (units, precision, control limits, enum strings) is stored once per distinct
tuple in ``value_meta``, keyed by the md5 ``digest`` of that tuple, and referenced by id.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from monitor import values
from monitor.values import Entry
from snapshots.models import Snapshot, ValueKind, ValueMeta, ValueSource
from squirrel.exceptions import NotFound

_NONE, _FLOAT, _INT, _STRING, _ENUM = (
    int(ValueKind.NONE),
    int(ValueKind.FLOAT),
    int(ValueKind.INT),
    int(ValueKind.STRING),
    int(ValueKind.ENUM),
)
_FLOAT_ARRAY, _INT_ARRAY, _STRING_ARRAY = (
    int(ValueKind.FLOAT_ARRAY),
    int(ValueKind.INT_ARRAY),
    int(ValueKind.STRING_ARRAY),
)

_SIDE_COLUMNS = (
    "kind",
    "num",
    "text",
    "array",
    "status",
    "severity",
    "ts",
    "meta_id",
    "source",
    "age",
    "connected",
    "error",
)
COPY_COLUMNS: tuple[str, ...] = (
    "snapshot_id",
    "pv_id",
    "pv_name",
    "setpoint_address",
    "readback_address",
    *(f"sp_{c}" for c in _SIDE_COLUMNS),
    *(f"rb_{c}" for c in _SIDE_COLUMNS),
)
_COPY_SQL = f"COPY snapshot_value ({', '.join(COPY_COLUMNS)}) FROM STDIN"
_EMPTY_SIDE: tuple[None, ...] = (None,) * len(_SIDE_COLUMNS)
_META_UNITS_MAX = ValueMeta._meta.get_field("units").max_length or 64


@dataclass(slots=True)
class CapturedValue:
    """One PV's captured setpoint and readback, with how each was obtained."""

    pv_id: uuid.UUID | None
    pv_name: str
    setpoint_address: str | None = None
    readback_address: str | None = None
    setpoint: Entry | None = None
    readback: Entry | None = None
    sp_source: ValueSource | int | None = None
    rb_source: ValueSource | int | None = None
    sp_age: float | None = None
    rb_age: float | None = None


@dataclass(slots=True)
class StoredValue(CapturedValue):
    """A CapturedValue read back from ``snapshot_value``, with the row's id."""

    id: int = 0


# --- writing ---------------------------------------------------------------------------------


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


def _pg_array(items: list[Any]) -> tuple[str, bool]:
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
        return _NONE, None, None, None, error
    if entry.get("index") is not None:
        return _ENUM, float(entry["index"]), str(value), None, error
    cls = type(value)
    if cls is float:
        if value - value == 0.0:
            return _FLOAT, value, None, None, error
        return _NONE, None, None, None, error or values.NON_FINITE
    if cls is int or cls is bool:
        return _INT, float(value), None, None, error
    if cls is str:
        return _STRING, None, value, None, error
    if isinstance(value, list | tuple):
        items = list(value)
        if any(isinstance(x, str) for x in items):
            return _STRING_ARRAY, None, json.dumps(items, ensure_ascii=False), None, error
        literal, bad = _pg_array(items)
        integral = all(x is None or isinstance(x, int) for x in items)
        kind = _INT_ARRAY if integral and items else _FLOAT_ARRAY
        if bad:  # values.clean turned NaN/Inf elements into None
            error = error or values.NON_FINITE
        return kind, None, None, literal, error
    if isinstance(value, float):  # a float subclass (numpy.float64)
        return _value_columns({**entry, "value": float(value)})
    if isinstance(value, int):
        return _INT, float(value), None, None, error
    if isinstance(value, bytes):
        return _STRING, None, value.decode("utf-8", "replace"), None, error
    return _STRING, None, str(value), None, error


def _meta_key(entry: Entry) -> tuple[Any, ...] | None:
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


_NO_META = (None, None, None, None, None)


def _meta_fields(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """(units, precision, upper, lower, enum_strs) as stored, from a raw ``_meta_key``."""
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


def meta_ids(keys: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    """Raw metadata key -> ValueMeta id, creating missing rows in bulk (ON CONFLICT DO NOTHING)."""
    digests: dict[tuple[Any, ...], str] = {}
    fields_by_digest: dict[str, tuple[Any, ...]] = {}
    for key in keys:
        fields = _meta_fields(key)
        digest = meta_digest(fields)
        digests[key] = digest
        fields_by_digest[digest] = fields
    if not digests:
        return {}
    ValueMeta.objects.bulk_create(
        [
            ValueMeta(
                digest=digest,
                units=f[0],
                precision=f[1],
                upper_ctrl_limit=f[2],
                lower_ctrl_limit=f[3],
                enum_strs=f[4],
            )
            for digest, f in fields_by_digest.items()
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    ids = dict(
        ValueMeta.objects.filter(digest__in=list(fields_by_digest)).values_list("digest", "id")
    )
    return {key: ids[digest] for key, digest in digests.items()}


def _side_row(
    entry: Entry | None, source: Any, age: float | None, meta_id: int | None
) -> tuple[Any, ...]:
    if entry is None:
        return _EMPTY_SIDE
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


def snapshot_values_write(*, snapshot: Snapshot, values: Iterable[CapturedValue]) -> int:
    """Write every captured value of ``snapshot`` with COPY; the number of rows written.

    Runs inside the caller's transaction (see the module docstring). Two passes: the distinct
    metadata first (resolved to ``value_meta`` ids in two queries), then each row is built
    and sent as it is built, so the server parses while Python encodes.
    """
    rows = values if isinstance(values, list | tuple) else list(values)
    # Each row's metadata keys, kept for the second pass (computing them costs as much as
    # the rest of a row).
    keys: dict[tuple[Any, ...], None] = {}
    row_keys: list[tuple[Any, Any]] = []
    for v in rows:
        sp_key = _meta_key(v.setpoint) if v.setpoint is not None else None
        rb_key = _meta_key(v.readback) if v.readback is not None else None
        keys[sp_key] = keys[rb_key] = None
        row_keys.append((sp_key, rb_key))
    keys.pop(None, None)
    metas: dict[Any, int | None] = {**meta_ids(keys), None: None}
    snapshot_id = str(snapshot.pk)
    with connection.cursor() as cursor:
        # pv_id has no database constraint (models.SnapshotValue.pv): no PV may be deleted
        # until this transaction ends, and ids of PVs deleted since the catalog was read are
        # written as null -- what the constraint and SET_NULL would have given. (Reading the
        # 50K ids here, ~40 ms, is half the cost of nulling them with an UPDATE afterwards.)
        cursor.execute("LOCK TABLE pv IN SHARE MODE")
        cursor.execute("SELECT id::text FROM pv")
        existing = {pv_id for (pv_id,) in cursor.fetchall()}
        pg = cursor.connection  # the psycopg connection (Django's wrapper delegates)
        with pg.cursor() as raw, raw.copy(_COPY_SQL) as copy:
            write = copy.write_row
            for v, (sp_key, rb_key) in zip(rows, row_keys, strict=True):
                pv_id = str(v.pv_id) if v.pv_id is not None else None
                write(
                    (
                        snapshot_id,
                        pv_id if pv_id in existing else None,
                        v.pv_name or "",
                        v.setpoint_address,
                        v.readback_address,
                        *_side_row(v.setpoint, v.sp_source, v.sp_age, metas[sp_key]),
                        *_side_row(v.readback, v.rb_source, v.rb_age, metas[rb_key]),
                    )
                )
    return len(rows)


# --- reading ---------------------------------------------------------------------------------

_SIDE_READ = ("kind", "num", "text", "array", "status", "severity", "ts", "source", "age")
_SIDE_READ += ("connected", "error")
_META_READ = ("units", "precision", "upper_ctrl_limit", "lower_ctrl_limit", "enum_strs")

_READ_SQL = (
    "SELECT sv.id, sv.pv_id, sv.pv_name, sv.setpoint_address, sv.readback_address, "
    + ", ".join(f"sv.sp_{c}" for c in _SIDE_READ)
    + ", "
    + ", ".join(f"spm.{c}" for c in _META_READ)
    + ", "
    + ", ".join(f"sv.rb_{c}" for c in _SIDE_READ)
    + ", "
    + ", ".join(f"rbm.{c}" for c in _META_READ)
    + " FROM snapshot_value sv"
    " LEFT JOIN value_meta spm ON spm.id = sv.sp_meta_id"
    " LEFT JOIN value_meta rbm ON rbm.id = sv.rb_meta_id"
    " WHERE sv.snapshot_id = %s ORDER BY sv.pv_name, sv.id"
)
_SIDE_WIDTH = len(_SIDE_READ) + len(_META_READ)


def side_value(kind: int | None, num: float | None, text: str | None, array: Any) -> Any:
    """The stored value as in an entry (enum: the label); arrays as lists, None when absent."""
    if kind == _FLOAT:
        return num
    if kind == _INT:
        return int(num) if num is not None else None
    if kind == _STRING:
        return text
    if kind == _ENUM:
        return text if text is not None else (int(num) if num is not None else None)
    if kind == _FLOAT_ARRAY:
        return list(array) if array is not None else None
    if kind == _INT_ARRAY:
        return [None if x is None else int(x) for x in array] if array is not None else None
    if kind == _STRING_ARRAY:
        return json.loads(text) if text is not None else None
    return None


def side_wire_value(kind: int | None, num: float | None, text: str | None, array: Any) -> Any:
    """The stored value as on the wire (EpicsValueDTO): an enum as its integer index."""
    if kind == _FLOAT:
        return num
    if kind in (_ENUM, _INT):
        return int(num) if num is not None else None
    if kind == _STRING:
        return text
    if kind == _FLOAT_ARRAY:  # NaN/Inf elements are stored NULL; one from elsewhere goes too
        return values.finite(array)
    if kind == _INT_ARRAY:
        return [None if x is None else int(x) for x in array] if array is not None else None
    if kind == _STRING_ARRAY:
        return json.loads(text) if text is not None else None
    return None


def entry_from_columns(cols: tuple[Any, ...]) -> Entry | None:
    """An Entry from one side's columns in ``_SIDE_READ + _META_READ`` order, None if absent."""
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
    if kind == _ENUM and num is not None:
        entry["index"] = int(num)
    units, precision, upper, lower, enum_strs = cols[11:16]
    entry["units"] = units
    entry["precision"] = precision
    entry["upper_ctrl_limit"] = upper
    entry["lower_ctrl_limit"] = lower
    entry["enum_strs"] = list(enum_strs) if enum_strs is not None else None
    return entry


def snapshot_value_entries(
    *, snapshot_id: uuid.UUID | str, chunk_size: int = 2000
) -> Iterator[StoredValue]:
    """Every value of a snapshot, rebuilt as entries, in ``pv_name`` order.

    One query, streamed ``chunk_size`` rows at a time (bounded memory at 50K rows); the
    connection is busy until the iterator is exhausted or closed.
    """
    sp_start = 5
    rb_start = sp_start + _SIDE_WIDTH
    with connection.cursor() as cursor:
        for r in cursor.cursor.stream(_READ_SQL, [str(snapshot_id)], size=chunk_size):
            sp = r[sp_start:rb_start]
            rb = r[rb_start:]
            yield StoredValue(
                pv_id=r[1],
                pv_name=r[2],
                setpoint_address=r[3],
                readback_address=r[4],
                setpoint=entry_from_columns(sp),
                readback=entry_from_columns(rb),
                sp_source=sp[7],
                rb_source=rb[7],
                sp_age=sp[8],
                rb_age=rb[8],
                id=r[0],
            )


# --- the snapshot row: edit and delete ----------------------------------------------------------
# (Services of the read API; they belong with the other snapshot services in services.py.)


def snapshot_update(
    *, snapshot_id: str, title: str | None = None, description: str | None = None
) -> Snapshot:
    """Change the title and/or description (None leaves a field unchanged); NotFound (404)."""
    with transaction.atomic():
        snapshot = _snapshot_locked(snapshot_id)
        if title is not None:
            snapshot.title = title
        if description is not None:
            snapshot.description = description
        snapshot.full_clean()
        snapshot.save(update_fields=["title", "description", "updated_at"])
    return snapshot


def snapshot_delete(*, snapshot_id: str) -> None:
    """Delete a snapshot and its values (one DELETE of the value rows); NotFound (404)."""
    with transaction.atomic():
        _snapshot_locked(snapshot_id).delete()


def _snapshot_locked(snapshot_id: str) -> Snapshot:
    try:
        return Snapshot.objects.select_for_update().get(pk=uuid.UUID(str(snapshot_id)))
    except (Snapshot.DoesNotExist, ValueError):
        raise NotFound(f"Snapshot {snapshot_id} not found") from None

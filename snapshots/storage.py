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

``snapshot_value_rows(*, snapshot_id, limit, offset, name_contains) -> Iterator[tuple]``
    The API's read of a snapshot's values: raw rows (see ``_VALUES_SQL``), streamed.

``snapshot_value_entries(*, snapshot_id) -> Iterator[StoredValue]``
    Reads a snapshot's rows back in ``pv_name`` order, rebuilding the entries, streamed a
    chunk at a time (bounded memory at 50K rows). ``StoredValue`` is a CapturedValue plus the
    row ``id``; ``pv_id`` is None when the PV was deleted since.

The column layout, the encoding of an entry into it and every decoder are in
``snapshots.codec``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connection

from monitor.values import Entry
from snapshots.codec import (
    DISPLAY_META,
    META_COLUMNS,
    META_JOIN,
    SIDE_COLUMNS,
    SIDE_READ,
    entry_from_columns,
    meta_digest,
    meta_fields,
    meta_key,
    select_sides,
    side_row,
    side_wire_value,
)
from snapshots.codec import pg_array as _pg_array  # noqa: F401  (tests/monitor/test_values.py)
from snapshots.models import Snapshot, ValueMeta, ValueSource

COPY_COLUMNS: tuple[str, ...] = (
    "snapshot_id",
    "pv_id",
    "pv_name",
    "setpoint_address",
    "readback_address",
    *(f"sp_{c}" for c in SIDE_COLUMNS),
    *(f"rb_{c}" for c in SIDE_COLUMNS),
)
_COPY_SQL = f"COPY snapshot_value ({', '.join(COPY_COLUMNS)}) FROM STDIN"


@dataclass(slots=True)
class CapturedValue:
    """One PV's captured setpoint and readback, with how each was obtained."""

    pv_id: uuid.UUID | str | None  # text from the capture's catalog, UUID when read back
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


def meta_ids(keys: Iterable[tuple[Any, ...]]) -> dict[tuple[Any, ...], int]:
    """Raw metadata key -> ValueMeta id, creating missing rows in bulk (ON CONFLICT DO NOTHING)."""
    digests: dict[tuple[Any, ...], str] = {}
    fields_by_digest: dict[str, tuple[Any, ...]] = {}
    for key in keys:
        fields = meta_fields(key)
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


def snapshot_values_write(*, snapshot: Snapshot, values: Iterable[CapturedValue]) -> int:
    """Write every captured value of ``snapshot`` with COPY; the number of rows written.

    Runs inside the caller's transaction (see the module docstring). Two passes: the distinct
    metadata first (resolved to ``value_meta`` ids in two queries), then each row is built
    and sent as it is built, so the server parses while Python encodes.
    """
    rows = values if isinstance(values, list | tuple) else list(values)
    # Each row's metadata keys, kept for the second pass (computing them costs as much as
    # the rest of a row).
    keys: dict[tuple[Any, ...] | None, None] = {}
    row_keys: list[tuple[Any, Any]] = []
    for v in rows:
        sp_key = meta_key(v.setpoint) if v.setpoint is not None else None
        rb_key = meta_key(v.readback) if v.readback is not None else None
        keys[sp_key] = keys[rb_key] = None
        row_keys.append((sp_key, rb_key))
    metas: dict[Any, int | None] = {**meta_ids(k for k in keys if k is not None), None: None}
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
                        *side_row(v.setpoint, v.sp_source, v.sp_age, metas[sp_key]),
                        *side_row(v.readback, v.rb_source, v.rb_age, metas[rb_key]),
                    )
                )
    return len(rows)


# --- reading ---------------------------------------------------------------------------------

_READ_SQL = (
    "SELECT sv.id, sv.pv_id, sv.pv_name, sv.setpoint_address, sv.readback_address, "
    + select_sides(META_COLUMNS)
    + " FROM snapshot_value sv"
    + META_JOIN
    + " WHERE sv.snapshot_id = %s ORDER BY sv.pv_name, sv.id"
)
_SIDE_WIDTH = len(SIDE_READ) + len(META_COLUMNS)


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


# --- the values of one snapshot for the API, streamed ---------------------------------------

# The PV's current tags as JSON text, looked up per row through the index on pv_tag.pv_id.
# (Aggregating every tagged PV once and hash-joining is faster with fresh statistics, but right
# after a capture the planner thinks the snapshot has a handful of rows, picks a nested loop
# over that aggregate and the query runs for minutes: per-row lookups cost the same either way.)
_TAGS_OBJECT = "json_agg(json_build_object('id', t.id, 'name', t.name, 'groupName', g.name)"
_TAGS_OBJECT += " ORDER BY g.name, t.name)::text AS tags"
_TAGS_FROM = " FROM pv_tag pt JOIN tag t ON t.id = pt.tag_id JOIN tag_group g ON g.id = t.group_id"
_TAGS_PER_ROW = (
    f" LEFT JOIN LATERAL (SELECT {_TAGS_OBJECT}{_TAGS_FROM} WHERE pt.pv_id = sv.pv_id) tg ON true"
)

_VALUES_SQL = (
    "SELECT sv.pv_id::text, sv.pv_name, pv.setpoint_address, pv.readback_address, "
    + select_sides(DISPLAY_META)
    + ", tg.tags"
    # The page is chosen first, so the joins below run only for the rows returned.
    " FROM (SELECT * FROM snapshot_value WHERE snapshot_id = %s{where}"
    "       ORDER BY pv_name, id{page}) sv"
    " LEFT JOIN pv ON pv.id = sv.pv_id" + META_JOIN + "{tags}"
    " ORDER BY sv.pv_name, sv.id"
)
"""Row: pv_id (text|None), pv_name, current setpoint and readback address (None when the PV
is gone), the setpoint side, the readback side (``codec.DISPLAY_WIDTH`` columns each; ``ts``
in epoch seconds: loading timestamptz values costs psycopg 0.5 s per 100K), and the PV's
current tags as JSON text ``[{id, name, groupName}]`` (None when it has none)."""


def snapshot_value_rows(
    *,
    snapshot_id: uuid.UUID,
    limit: int | None = None,
    offset: int = 0,
    name_contains: str | None = None,
    chunk_size: int = 2000,
) -> Iterator[tuple[Any, ...]]:
    """The values of a snapshot in ``pv_name`` order (optionally only names containing
    ``name_contains``, case-insensitively), ``limit``/``offset`` applied.

    ONE query, streamed (psycopg's chunked rows mode, ``chunk_size`` rows at a time): the
    server keeps producing rows while the caller encodes the previous ones, and memory stays
    bounded however large the snapshot. The connection is busy until the iterator is
    exhausted or closed (closing it cancels the query). Streamed queries bypass Django's
    execute wrappers, so they do not show in ``connection.queries``.
    """
    where = page = ""
    params: list[Any] = [snapshot_id]
    if name_contains:
        where = " AND pv_name ILIKE %s"
        params.append("%" + _like_escape(name_contains) + "%")
    if limit is not None:
        page += " LIMIT %s"
        params.append(limit)
    if offset:
        page += " OFFSET %s"
        params.append(offset)
    sql = _VALUES_SQL.format(where=where, page=page, tags=_TAGS_PER_ROW)
    # (JIT is off for every connection, settings.DATABASES: it added 1 s to this query.)
    with connection.cursor() as cursor:
        yield from cursor.cursor.stream(sql, params, size=chunk_size)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- saved values by address across snapshots (metadataPVs) and one PV's history ------------

_AT_SQL = (
    "SELECT sv.snapshot_id, sv.pv_name, sv.setpoint_address, sv.readback_address,"
    " sv.sp_kind, sv.sp_num, sv.sp_text, sv.sp_array, sv.rb_kind, sv.rb_num, sv.rb_text,"
    " sv.rb_array FROM snapshot_value sv WHERE sv.snapshot_id = ANY(%s::uuid[])"
    " AND sv.pv_name = ANY(%s::text[])"
    # A readback address is found through the catalog (index on pv.readback_address, then on
    # snapshot_value.pv_id): a value row is recorded under its setpoint address.
    " UNION ALL SELECT sv.snapshot_id, sv.pv_name, sv.setpoint_address, sv.readback_address,"
    " sv.sp_kind, sv.sp_num, sv.sp_text, sv.sp_array, sv.rb_kind, sv.rb_num, sv.rb_text,"
    " sv.rb_array FROM snapshot_value sv JOIN pv ON pv.id = sv.pv_id"
    " WHERE pv.readback_address = ANY(%s::text[]) AND sv.snapshot_id = ANY(%s::uuid[])"
)


def snapshot_values_at(
    *, snapshot_ids: list[uuid.UUID], addresses: list[str]
) -> dict[tuple[str, str], Any]:
    """``(snapshot id, address) -> saved value`` (wire encoding) of each address saved in
    these snapshots, as setpoint or readback; absent pairs were not saved. Two index scans."""
    if not snapshot_ids or not addresses:
        return {}
    ids = [str(i) for i in snapshot_ids]
    out: dict[tuple[str, str], Any] = {}
    wanted = set(addresses)
    with connection.cursor() as cursor:
        cursor.execute(_AT_SQL, [ids, addresses, addresses, ids])
        for snap, name, sp_address, rb_address, *cols in cursor.fetchall():
            for address, side in ((sp_address or name, cols[:4]), (rb_address, cols[4:])):
                if address in wanted and side[0] is not None:
                    out[(str(snap), address)] = side_wire_value(*side)
    return out


_HISTORY_SQL = (
    "SELECT s.id::text, s.title, s.created_at, sv.pv_name, "
    + select_sides(DISPLAY_META)
    + " FROM snapshot_value sv JOIN snapshot s ON s.id = sv.snapshot_id"
    + META_JOIN
    + " WHERE sv.pv_id = %s ORDER BY s.created_at DESC, s.id DESC LIMIT %s OFFSET %s"
)
"""Row: snapshot id, title, created_at, pv_name, then the setpoint and readback sides
(``codec.DISPLAY_WIDTH`` columns each) as ``serializers.epics_value_dto`` reads them."""


def pv_history_rows(*, pv_id: uuid.UUID, limit: int, offset: int) -> list[tuple[Any, ...]]:
    """One PV's saved values across snapshots, newest snapshot first, a page at a time
    (index on ``snapshot_value.pv_id``)."""
    with connection.cursor() as cursor:
        cursor.execute(_HISTORY_SQL, [pv_id, limit, offset])
        return cursor.fetchall()

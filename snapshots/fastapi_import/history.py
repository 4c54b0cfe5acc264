"""Phase "snapshots": every snapshot with its id, title, comment, author and date, and every
value, written through our one column codec (``snapshots.codec``) with COPY.

1. A snapshot whose id exists here with as many values as the source holds is *unchanged*
   (snapshots are immutable: its values are never rewritten); with other title, comment or
   author it is *differing*, and ``update`` refreshes those three. One with another number of
   values is a conflict: the phase writes nothing.
2. Values stream from the source (``Source.values``, a server-side cursor) and go out in
   chunks of at most ``CHUNK_ROWS`` rows or ``CHUNK_BYTES`` of source JSON: each chunk's new
   display metadata is resolved to ``value_meta`` ids first (``storage.meta_ids``), then the
   chunk is one COPY. Memory stays bounded by one chunk whatever the history's size.
3. Each side's source is ``ValueSource.IMPORTED`` (its quality: imported, never live or
   re-read), ``connected`` and ``age`` unknown (NULL). The setpoint side takes the row's
   ``status``/``severity``/``timestamp`` columns where its JSON has none (the FastAPI
   Squirrel's API shows those columns as the value's); anything still missing stays NULL.
4. Like a capture (``storage.snapshot_values_write``), ``pv`` is held in SHARE mode until
   commit, and a value whose PV is not in our catalog keeps its name and a NULL ``pv_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from typing import Any

from django.db import connection
from psycopg.copy import QueuedLibpqWriter

from snapshots.codec import meta_key, side_row
from snapshots.fastapi_import.report import PhaseReport, Progress
from snapshots.fastapi_import.source import Source, SourceValue, entry_from_json, has_meta
from snapshots.fastapi_import.target import copy_rows, update_rows
from snapshots.models import Snapshot, ValueSource
from snapshots.storage import COPY_COLUMNS, meta_ids

CHUNK_ROWS = 5000
CHUNK_BYTES = 8 << 20
IMPORTED = int(ValueSource.IMPORTED)
SNAPSHOT_COLUMNS = (
    "id", "title", "description", "created_by", "kind", "pv_count", "live_count",
    "stale_count", "reread_count", "failed_count", "created_at", "updated_at", "labels",
    "metadata",
)  # fmt: skip
_NO_LABELS, _NO_METADATA = "{}", "{}"  # COPY text: an empty text[] and an empty JSON object
_SOURCE_SQL = (
    "SELECT s.id, s.title, s.description, s.created_by, s.created_at, s.updated_at,"
    " (SELECT count(*) FROM snapshot_value v WHERE v.snapshot_id = s.id)"
    " FROM snapshot s ORDER BY s.created_at, s.id"
)


def snapshots_import(
    *, source: Source, report: PhaseReport, update: bool, progress: Progress | None = None
) -> None:
    """Import snapshots and their values into ``report``'s counts (module docstring)."""
    count = report.table("snapshot")
    value_count = report.table("snapshot_value")
    rows = source.rows(_SOURCE_SQL)
    ours = {
        s["id"]: s
        for s in Snapshot.objects.filter(pk__in=[r[0] for r in rows]).values(
            "id", "title", "description", "created_by", "pv_count"
        )
    }
    new: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    for sid, title, description, author, created, updated, n in rows:
        count.read += 1
        value_count.read += n
        mine = ours.get(sid)
        if mine is None:
            count.created += 1
            new.append((sid, title, description, author, created, updated, n))
            continue
        if mine["pv_count"] != n:
            report.conflicts.append(
                f"snapshot {title!r} ({sid}): exists here with {mine['pv_count']} values, "
                f"the source holds {n}"
            )
            continue
        value_count.unchanged += n
        if (mine["title"], mine["description"], mine["created_by"]) == (title, description, author):
            count.unchanged += 1
        elif update:
            count.updated += 1
            changes.append((sid, title, description, author))
        else:
            count.differing += 1
    if report.conflicts:
        return
    update_rows("snapshot", "id", ("title", "description", "created_by"), changes, stamp=True)
    if not new:
        return
    copy_rows(
        "snapshot",
        SNAPSHOT_COLUMNS,
        [(sid, title, description, author, Snapshot.Kind.SNAPSHOT, n, 0, 0, 0, 0, created, updated,
          _NO_LABELS, _NO_METADATA)
         for sid, title, description, author, created, updated, n in new],
    )  # fmt: skip
    failures = []
    with _ValueWriter(source=source, total=sum(r[-1] for r in new), progress=progress) as writer:
        for row in new:
            sid = str(row[0])
            written, failed = writer.write(sid, source.values(sid))
            value_count.created += written
            if failed:
                failures.append((sid, failed))
    update_rows("snapshot", "id", ("failed_count",), failures, stamp=False)


_COPY_SQL = f"COPY snapshot_value ({', '.join(COPY_COLUMNS)}) FROM STDIN"


class _ValueWriter:
    """Streams source values into ``snapshot_value``, a bounded chunk at a time."""

    def __init__(self, *, source: Source, total: int, progress: Progress | None) -> None:
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE pv IN SHARE MODE")
            cursor.execute("SELECT id::text FROM pv")
            self.pv_ids = {r[0] for r in cursor.fetchall()}
        self.addresses = source.addresses()
        self.metas: dict[Any, int | None] = {None: None}
        self.total = total
        self.done = 0
        self.progress = progress
        # ONE COPY for every snapshot's values: the server parses rows while this process
        # encodes the next ones, never idle between snapshots.
        self.copy = _Copy()

    def __enter__(self) -> _ValueWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.copy.end(*exc)

    def write(self, snapshot_id: str, chunks: Iterable[list[SourceValue]]) -> tuple[int, int]:
        """Write every value of one snapshot; (rows written, rows without any value).

        The rows go into the writer's one COPY, sent by psycopg's writer thread while this
        one encodes; it is ended and reopened only when a value brings display metadata not
        yet in ``value_meta`` (its id must be known before the row is sent), rare after the
        first rows.
        """
        written = failed = 0
        addresses = self.addresses
        pv_ids = self.pv_ids
        metas = self.metas
        no_address = (None, None)
        copy = self.copy
        for chunk in chunks:
            for pv_id, name, sp_json, rb_json, status, severity, ts in chunk:
                rb = entry_from_json(rb_json)
                # Often the same JSON text (its cache saved one value for both sides).
                sp = (
                    rb.copy() if rb is not None and sp_json == rb_json else entry_from_json(sp_json)
                )
                if sp is not None:
                    if sp["status"] is None:
                        sp["status"] = status
                    if sp["severity"] is None:
                        sp["severity"] = severity
                    if sp["timestamp"] is None:
                        sp["timestamp"] = ts
                    if sp["value"] is None and (rb is None or rb.get("value") is None):
                        failed += 1
                elif rb is None or rb.get("value") is None:
                    failed += 1
                sp_key = meta_key(sp) if has_meta(sp) else None  # type: ignore[arg-type]
                rb_key = meta_key(rb) if has_meta(rb) else None  # type: ignore[arg-type]
                if sp_key not in metas or rb_key not in metas:
                    copy.end()
                    metas.update(
                        meta_ids(k for k in (sp_key, rb_key) if k is not None and k not in metas)
                    )
                sp_address, rb_address = addresses.get(pv_id, no_address)
                copy.row(
                    (
                        snapshot_id,
                        pv_id if pv_id in pv_ids else None,
                        name,
                        sp_address,
                        rb_address,
                        *side_row(sp, IMPORTED, None, metas[sp_key]),
                        *side_row(rb, IMPORTED, None, metas[rb_key]),
                    )
                )
            written += len(chunk)
            self.done += len(chunk)
            if self.progress is not None:
                self.progress("values", self.done, self.total)
        return written, failed


class _Copy:
    """A COPY into ``snapshot_value`` opened on the first row and ended on demand."""

    def __init__(self) -> None:
        self._stack: ExitStack | None = None
        self._write: Any = None

    def row(self, row: tuple[Any, ...]) -> None:
        if self._write is None:
            self._stack = ExitStack()
            cursor = self._stack.enter_context(connection.cursor()).cursor
            copy = self._stack.enter_context(
                cursor.copy(_COPY_SQL, writer=QueuedLibpqWriter(cursor))
            )
            self._write = copy.write_row
        self._write(row)

    def end(self, *exc: Any) -> None:
        """Finish the COPY (waits for the server), so the connection can run other queries;
        with an exception (``__exit__``'s arguments), abort it."""
        if self._stack is not None:
            stack, self._stack, self._write = self._stack, None, None
            stack.__exit__(*(exc or (None, None, None)))

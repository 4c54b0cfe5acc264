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

from typing import Any

from django.db import connection

from monitor.values import Entry
from snapshots.codec import meta_key, side_row
from snapshots.fastapi_import.report import PhaseReport, Progress
from snapshots.fastapi_import.source import Source, SourceValue, entry_from_json
from snapshots.fastapi_import.target import copy_rows, update_rows
from snapshots.models import Snapshot, ValueSource
from snapshots.storage import COPY_COLUMNS, meta_ids

CHUNK_ROWS = 5000
CHUNK_BYTES = 8 << 20
IMPORTED = int(ValueSource.IMPORTED)
SNAPSHOT_COLUMNS = (
    "id", "title", "description", "created_by", "kind", "pv_count", "live_count",
    "stale_count", "reread_count", "failed_count", "created_at", "updated_at",
)  # fmt: skip
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
    writer = _ValueWriter(total=sum(r[-1] for r in new), progress=progress)
    for sid, title, description, author, created, updated, n in new:
        copy_rows(
            "snapshot",
            SNAPSHOT_COLUMNS,
            [(sid, title, description, author, Snapshot.Kind.SNAPSHOT, n, 0, 0, 0, 0, created,
              updated)],
        )  # fmt: skip
        written, failed = writer.write(str(sid), source.values(str(sid)))
        value_count.created += written
        if failed:
            # (QuerySet.update leaves updated_at as the source had it)
            Snapshot.objects.filter(pk=sid).update(failed_count=failed)


def _meta(entry: Entry | None) -> Any:
    return meta_key(entry) if entry is not None else None


_COPY_SQL = f"COPY snapshot_value ({', '.join(COPY_COLUMNS)}) FROM STDIN"


class _ValueWriter:
    """Streams source values into ``snapshot_value``, a bounded chunk at a time."""

    def __init__(self, *, total: int, progress: Progress | None) -> None:
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE pv IN SHARE MODE")
            cursor.execute("SELECT id::text FROM pv")
            self.pv_ids = {r[0] for r in cursor.fetchall()}
        self.metas: dict[Any, int | None] = {None: None}
        self.total = total
        self.done = 0
        self.progress = progress

    def write(self, snapshot_id: str, values: Any) -> tuple[int, int]:
        """Write every value of one snapshot; (rows written, rows without any value)."""
        written = failed = 0
        chunk: list[tuple[SourceValue, Entry | None, Entry | None]] = []
        size = 0
        for v in values:
            sp = entry_from_json(v.setpoint)
            rb = entry_from_json(v.readback)
            if sp is not None:
                if sp.get("status") is None:
                    sp["status"] = v.status
                if sp.get("severity") is None:
                    sp["severity"] = v.severity
                if sp.get("timestamp") is None:
                    sp["timestamp"] = v.timestamp
            if (sp is None or sp.get("value") is None) and (rb is None or rb.get("value") is None):
                failed += 1
            chunk.append((v, sp, rb))
            size += len(v.setpoint or "") + len(v.readback or "")
            if len(chunk) >= CHUNK_ROWS or size >= CHUNK_BYTES:
                written += self._flush(snapshot_id, chunk)
                chunk, size = [], 0
        if chunk:
            written += self._flush(snapshot_id, chunk)
        return written, failed

    def _flush(
        self, snapshot_id: str, chunk: list[tuple[SourceValue, Entry | None, Entry | None]]
    ) -> int:
        keys: list[tuple[Any, Any]] = []
        missing: set[Any] = set()
        for _, sp, rb in chunk:
            pair = (
                meta_key(sp) if sp is not None else None,
                meta_key(rb) if rb is not None else None,
            )
            keys.append(pair)
            missing.update(k for k in pair if k not in self.metas)
        if missing:
            self.metas.update(meta_ids(missing))
        metas = self.metas
        pv_ids = self.pv_ids
        with connection.cursor() as cursor, cursor.cursor.copy(_COPY_SQL) as copy:
            write = copy.write_row
            for (v, sp, rb), (sp_key, rb_key) in zip(chunk, keys, strict=True):
                write(
                    (
                        snapshot_id,
                        v.pv_id if v.pv_id in pv_ids else None,
                        v.pv_name,
                        v.setpoint_address,
                        v.readback_address,
                        *side_row(sp, IMPORTED, None, metas[sp_key]),
                        *side_row(rb, IMPORTED, None, metas[rb_key]),
                    )
                )
        self.done += len(chunk)
        if self.progress is not None:
            self.progress("values", self.done, self.total)
        return len(chunk)

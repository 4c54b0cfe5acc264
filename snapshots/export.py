"""Export of a snapshot with every value as a CSV or JSON file, streamed in chunks."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from django.db import connection

from monitor import values
from pvs import csvio
from snapshots.codec import (
    DISPLAY_META,
    DISPLAY_WIDTH,
    META_JOIN,
    SOURCE_NAMES,
    select_sides,
    side_from_columns,
)
from snapshots.models import Snapshot
from snapshots.serializers import iso_utc, snapshot_summary_dto
from squirrel.api import dumps
from squirrel.exceptions import Invalid

EXPORT_FORMATS = ("csv", "json")
EXPORT_CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
_EXPORT_SQL = (
    "SELECT sv.pv_id, sv.pv_name, sv.setpoint_address, sv.readback_address, "
    + select_sides(DISPLAY_META)
    + " FROM snapshot_value sv"
    + META_JOIN
    + " WHERE sv.snapshot_id = %s ORDER BY sv.pv_name, sv.id"
)
CSV_HEADER = (
    "pvId", "pvName", "setpointAddress", "readbackAddress",
    *(f"{side}{field}" for side in ("setpoint", "readback") for field in (
        "Value", "Label", "Status", "Severity", "Timestamp", "Units", "Precision",
        "UpperCtrlLimit", "LowerCtrlLimit", "Source", "Age", "Connected", "Error",
    )),
)  # fmt: skip


def _export_side(cols: tuple[Any, ...]) -> dict[str, Any] | None:
    """An EpicsValueDTO plus label and quality keys from one side's columns (``SIDE_READ``
    then ``DISPLAY_META``, codec), None when absent."""
    kind, num, text, array, status, severity, ts, source, age, connected, error = cols[:11]
    units, precision, upper, lower = cols[11:]
    side = side_from_columns(kind, num, text, array, source, connected, error)
    if side is None:
        return None
    return {
        "value": values.finite(side.wire),
        "label": side.label,
        "status": status,
        "severity": severity,
        "timestamp": iso_utc(ts),
        "units": units,
        "precision": precision,
        "upper_ctrl_limit": values.finite(upper),
        "lower_ctrl_limit": values.finite(lower),
        "source": SOURCE_NAMES.get(source),
        "age": age,
        "connected": connected,
        "error": error,
        "quality": side.quality,
    }


def snapshot_export_rows(*, snapshot: Snapshot) -> Iterable[dict[str, Any]]:
    """Every value of the snapshot as a plain dict, ordered by pv_name, read in chunks with a
    server-side cursor (memory stays bounded at 50K values)."""
    with connection.chunked_cursor() as cursor:
        cursor.execute(_EXPORT_SQL, [snapshot.pk])
        while chunk := cursor.fetchmany(2000):
            yield from _export_chunk(chunk)


def _export_chunk(chunk: list[tuple[Any, ...]]) -> Iterable[dict[str, Any]]:
    for row in chunk:
        sp = row[4 : 4 + DISPLAY_WIDTH]
        rb = row[4 + DISPLAY_WIDTH : 4 + 2 * DISPLAY_WIDTH]
        yield {
            "pvId": str(row[0]) if row[0] is not None else None,
            "pvName": row[1],
            "setpointAddress": row[2],
            "readbackAddress": row[3],
            "setpointValue": _export_side(sp),
            "readbackValue": _export_side(rb),
        }


def snapshot_export_filename(*, snapshot: Snapshot, fmt: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in snapshot.title)[:60]
    return f"snapshot-{safe or 'untitled'}-{snapshot.pk}.{fmt}"


def _csv_cell(value: Any) -> Any:
    """One CSV cell: empty for null, JSON for arrays, ``spreadsheet_safe`` text (a string PV's
    value, a label, an error, a name may start a formula); numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return csvio.spreadsheet_safe(value)


def snapshot_export(*, snapshot: Snapshot, fmt: str) -> Iterable[str]:
    """The snapshot with every value as CSV or JSON text, in chunks.

    JSON: ``{"snapshot": SnapshotSummary, "pvValues": [...]}`` with EpicsValueDTOs plus label
    and quality. CSV: one row per PV, ``CSV_HEADER`` columns, arrays as JSON.
    """
    rows = snapshot_export_rows(snapshot=snapshot)
    if fmt == "json":
        head = snapshot_summary_dto(snapshot)
        yield '{"snapshot":' + dumps(head) + ',"pvValues":['
        first = True
        buffer: list[str] = []
        for row in rows:
            buffer.append(dumps(row) if first else "," + dumps(row))
            first = False
            if len(buffer) >= 500:
                yield "".join(buffer)
                buffer = []
        yield "".join(buffer) + "]}\n"
        return
    if fmt != "csv":
        raise Invalid(f"Unknown export format {fmt!r}")
    out = io.StringIO()
    writer = csvio.csv_writer(out)
    writer.writerow(CSV_HEADER)
    fields = (
        "value", "label", "status", "severity", "timestamp", "units", "precision",
        "upper_ctrl_limit", "lower_ctrl_limit", "source", "age", "connected", "error",
    )  # fmt: skip
    for n, row in enumerate(rows, 1):
        names = (row["pvId"], row["pvName"], row["setpointAddress"], row["readbackAddress"])
        cells = [_csv_cell(c) for c in names]  # once each: the escape is not idempotent
        for key in ("setpointValue", "readbackValue"):
            side = row[key] or {}
            cells.extend(_csv_cell(side.get(f)) for f in fields)
        writer.writerow(cells)
        if n % 500 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()

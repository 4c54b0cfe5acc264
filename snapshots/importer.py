"""Snapshot import (issue 17 item 7): the CSV or JSON file ``export.snapshot_export`` writes,
read back as a new snapshot of kind ``imported``.

1. The format is named, or guessed: JSON starts with ``{``, anything else is CSV.
2. Every row is parsed into a ``CapturedValue`` (the value encoding of ``monitor.values``: an
   enum is its label with its ``index``), each side's source ``IMPORTED``; its quality
   (connected, error, age, alarm, timestamp, display metadata) is kept as written.
3. PV links are matched by address: the setpoint address, else the readback address, else the
   name, against the catalog now (a PV of the file that is not in the catalog is kept, its
   ``pvId`` null, as for a deleted PV).
4. Every problem is collected with the line (CSV) or the item (JSON, and the line of a syntax
   error) it is on; any problem means nothing is written (422 listing them). The snapshot and
   its values are then written in ONE transaction (``capture.snapshot_store``: COPY), with
   its audit event ``snapshot.import``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction

from monitor import values
from pvs import csvio
from pvs.models import PV
from snapshots.capture import Completeness, snapshot_store
from snapshots.export import CSV_HEADER
from snapshots.models import Snapshot, ValueSource
from snapshots.services import snapshot_title_clean
from snapshots.storage import CapturedValue
from squirrel.exceptions import Invalid

MAX_ERRORS = 50
_FIELDS = ("Value", "Label", "Status", "Severity", "Timestamp", "Units", "Precision",
           "UpperCtrlLimit", "LowerCtrlLimit", "Source", "Age", "Connected", "Error")  # fmt: skip
_KEYS = ("value", "label", "status", "severity", "timestamp", "units", "precision",
         "upper_ctrl_limit", "lower_ctrl_limit", "source", "age", "connected", "error")  # fmt: skip


class ImportProblems(Invalid):
    """The file cannot be imported; ``errors`` name where each problem is."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_ERRORS]
        more = f" (and {len(problems) - MAX_ERRORS} more)" if len(problems) > MAX_ERRORS else ""
        super().__init__(
            f"Cannot import the snapshot: {'; '.join(shown[:5])}{more}",
            [{"loc": ["body", "file"], "msg": p, "type": "value_error"} for p in shown],
        )
        self.problems = problems


class _Row:
    """Problems of one row go to ``problems`` prefixed with where the row is."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems

    def fail(self, field: str, msg: str) -> None:
        self.problems.append(f"{self.where}: {field}: {msg}")


def _int(row: _Row, field: str, raw: Any) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        return int(raw)
    except (TypeError, ValueError):
        row.fail(field, f"{raw!r} is not an integer")
        return None


def _float(row: _Row, field: str, raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        return float(raw)
    except (TypeError, ValueError):
        row.fail(field, f"{raw!r} is not a number")
        return None


def _epoch(row: _Row, field: str, raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        at = datetime.fromisoformat(str(raw))
        if at.tzinfo is None:
            raise ValueError
        return at.timestamp()
    except ValueError:
        row.fail(field, f"{raw!r} is not an ISO 8601 time with its offset")
        return None


def _bool(row: _Row, field: str, raw: Any) -> bool | None:
    if raw is None or raw == "" or isinstance(raw, bool):
        return raw if isinstance(raw, bool) else None
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    row.fail(field, f"{raw!r} is not true or false")
    return None


def _text(row: _Row, field: str, raw: Any) -> str | None:
    if raw is None or raw == "":
        return None if raw is None else ""
    if not isinstance(raw, str):
        row.fail(field, "must be text")
        return None
    if "\x00" in raw:
        row.fail(field, "null characters are not allowed")
        return None
    return raw


def _entry(row: _Row, side: str, data: dict[str, Any] | None) -> values.Entry | None:
    """An entry from an exported EpicsValueDTO (plus label and quality), None if absent."""
    if data is None:
        return None
    if not isinstance(data, dict):
        row.fail(side, "must be an object or null")
        return None
    value = data.get("value")
    label = _text(row, f"{side}.label", data.get("label"))
    entry: values.Entry = {
        "value": value,
        "connected": bool(_bool(row, f"{side}.connected", data.get("connected"))),
        "status": _int(row, f"{side}.status", data.get("status")),
        "severity": _int(row, f"{side}.severity", data.get("severity")),
        "timestamp": _epoch(row, f"{side}.timestamp", data.get("timestamp")),
        "units": _text(row, f"{side}.units", data.get("units")),
        "precision": _int(row, f"{side}.precision", data.get("precision")),
        "upper_ctrl_limit": _float(row, f"{side}.upper_ctrl_limit", data.get("upper_ctrl_limit")),
        "lower_ctrl_limit": _float(row, f"{side}.lower_ctrl_limit", data.get("lower_ctrl_limit")),
        "error": _text(row, f"{side}.error", data.get("error")),
    }
    if label is not None:  # an enum: the label is the value, the index beside it
        index = _int(row, f"{side}.value", value)
        entry["value"], entry["index"] = label, index
    elif isinstance(value, dict) or isinstance(value, str) and "\x00" in value:
        row.fail(f"{side}.value", "must be a number, text, a list or null")
    return entry


def _age(row: _Row, side: str, data: Any) -> float | None:
    return _float(row, f"{side}.age", data.get("age")) if isinstance(data, dict) else None


def _captured(row: _Row, item: dict[str, Any]) -> CapturedValue | None:
    name = _text(row, "pvName", item.get("pvName"))
    sp_address = _text(row, "setpointAddress", item.get("setpointAddress")) or None
    rb_address = _text(row, "readbackAddress", item.get("readbackAddress")) or None
    if not name:
        row.fail("pvName", "required")
        return None
    sp, rb = item.get("setpointValue"), item.get("readbackValue")
    sp_entry, rb_entry = _entry(row, "setpointValue", sp), _entry(row, "readbackValue", rb)
    imported = ValueSource.IMPORTED
    return CapturedValue(
        pv_id=None,
        pv_name=name,
        setpoint_address=sp_address,
        readback_address=rb_address,
        setpoint=sp_entry,
        readback=rb_entry,
        sp_source=imported if sp_entry is not None else None,
        rb_source=imported if rb_entry is not None else None,
        sp_age=_age(row, "setpointValue", sp),
        rb_age=_age(row, "readbackValue", rb),
    )


# --- the two formats --------------------------------------------------------------------------


def _json_rows(text: str, problems: list[str]) -> tuple[dict[str, Any], list[CapturedValue]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"line {exc.lineno}, column {exc.colno}: not JSON: {exc.msg}")
        return {}, []
    if not isinstance(doc, dict) or not isinstance(doc.get("pvValues"), list):
        problems.append('line 1: expected {"snapshot": {...}, "pvValues": [...]}')
        return {}, []
    head: dict[str, Any] = doc["snapshot"] if isinstance(doc.get("snapshot"), dict) else {}
    rows = []
    for i, item in enumerate(doc["pvValues"]):
        row = _Row(f"pvValues[{i}]", problems)
        if not isinstance(item, dict):
            row.fail("item", "must be an object")
            continue
        captured = _captured(row, item)
        if captured is not None:
            rows.append(captured)
    return head, rows


def _csv_value(cell: str) -> Any:
    """A value cell as the export wrote it: empty is null, JSON for arrays, numbers as
    numbers (an integer stays one), anything else text (``spreadsheet_safe`` undone)."""
    if cell == "":
        return None
    if cell.startswith("["):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return csvio.spreadsheet_unescape(cell)
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return csvio.spreadsheet_unescape(cell)


def _csv_rows(text: str, problems: list[str]) -> list[CapturedValue]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None or tuple(csvio.spreadsheet_unescape(h) for h in header) != CSV_HEADER:
        problems.append(f"line 1: the header must be the export's: {','.join(CSV_HEADER)}")
        return []
    rows = []
    for cells in reader:
        line = reader.line_num
        if not any(cells):
            continue
        row = _Row(f"line {line}", problems)
        if len(cells) != len(CSV_HEADER):
            row.fail("row", f"{len(cells)} cells, the header has {len(CSV_HEADER)}")
            continue
        unescaped = [csvio.spreadsheet_unescape(c) for c in cells[:4]]
        item: dict[str, Any] = {
            "pvName": unescaped[1],
            "setpointAddress": unescaped[2],
            "readbackAddress": unescaped[3],
        }
        for n, side in enumerate(("setpointValue", "readbackValue")):
            part = cells[4 + n * len(_FIELDS) : 4 + (n + 1) * len(_FIELDS)]
            if not any(part):
                item[side] = None
                continue
            data = {k: csvio.spreadsheet_unescape(c) if c else None for k, c in zip(
                _KEYS, part, strict=True)}  # fmt: skip
            data["value"] = _csv_value(part[0])
            item[side] = data
        captured = _captured(row, item)
        if captured is not None:
            rows.append(captured)
    return rows


def _link(rows: Iterable[CapturedValue]) -> None:
    """Set each row's PV id from the catalog by address (module docstring, step 3)."""
    rows = list(rows)
    wanted = {a for r in rows for a in (r.setpoint_address, r.readback_address, r.pv_name) if a}
    by_sp = dict(
        PV.objects.filter(setpoint_address__in=wanted).values_list("setpoint_address", "pk")
    )
    by_rb = dict(
        PV.objects.filter(readback_address__in=wanted).values_list("readback_address", "pk")
    )
    for r in rows:
        r.pv_id = (
            by_sp.get(r.setpoint_address or "")
            or by_rb.get(r.readback_address or "")
            or by_sp.get(r.pv_name)
            or by_rb.get(r.pv_name)
        )


def _counts(rows: list[CapturedValue]) -> Completeness:
    counts = Completeness()
    for entry in (e for r in rows for e in (r.setpoint, r.readback) if e is not None):
        if entry.get("value") is None:
            counts.failed += 1
        elif not entry.get("connected") or entry.get("error"):
            counts.stale += 1
        else:
            counts.live += 1
    return counts


def snapshot_import(
    *, content: str, fmt: str | None = None, title: str | None = None, actor: str
) -> Snapshot:
    """A new ``imported`` snapshot from an export file (module docstring); ImportProblems
    (422) naming every problem's line or item, and then nothing is written."""
    fmt = (fmt or ("json" if content.lstrip().startswith("{") else "csv")).lower()
    if fmt not in ("csv", "json"):
        raise ImportProblems([f"format: {fmt!r} is neither csv nor json"])
    problems: list[str] = []
    head: dict[str, Any] = {}
    if fmt == "json":
        head, rows = _json_rows(content, problems)
    else:
        rows = _csv_rows(content.lstrip("\ufeff"), problems)
    if not rows and not problems:
        problems.append("the file holds no values")
    if problems:
        raise ImportProblems(problems)
    original = head.get("title") if isinstance(head.get("title"), str) else None
    name = snapshot_title_clean(title or (f"{original} (imported)" if original else "imported"))
    comment = head.get("comment") if isinstance(head.get("comment"), str) else None
    _link(rows)
    rows.sort(key=lambda r: r.pv_name)
    with transaction.atomic():
        return snapshot_store(
            title=name,
            description=comment,
            created_by=actor,
            kind=Snapshot.Kind.IMPORTED,
            rows=[values_clean(r) for r in rows],
            counts=_counts(rows),
            actor=actor,
        )


def values_clean(row: CapturedValue) -> CapturedValue:
    """NaN/Inf out of the imported values (``monitor.values.clean``), as capture does."""
    if row.setpoint is not None:
        row.setpoint = values.clean(row.setpoint)
    if row.readback is not None:
        row.readback = values.clean(row.readback)
    return row

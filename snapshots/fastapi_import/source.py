"""The FastAPI Squirrel's database, read-only, and the decoding of its stored values.

1. ``Source`` opens ONE transaction, ``REPEATABLE READ`` and ``READ ONLY``, and keeps it for the
   whole import and its verification: every phase sees the same consistent view, so the import
   can run against a live deployment whose writers keep going (their later writes are picked
   up by the next run).
2. Its tables are the FastAPI Squirrel's (slaclab/react-squirrel-backend, alembic head
   ``6c1c0c2f8a1b``): ``pv``, ``tag_group``, ``tag``, ``pv_tag``, ``snapshot``,
   ``snapshot_value`` and ``api_key``. Jobs are not imported (they describe work of the old
   processes, not data).
3. A ``snapshot_value`` side (``setpoint_value`` / ``readback_value``, JSONB) holds a JSON object
   ``{"value", "status", "severity", "timestamp", "units", "precision", ...}`` -- or, as its
   cache path wrote them, a JSON *string* holding that object's JSON text (double-encoded).
   ``entry_from_json`` accepts both (and JSON null, SQL NULL: nothing captured) and returns
   the value as an entry of ``monitor.values``, which ``snapshots.codec`` then stores.
4. Values are streamed with a server-side (named) cursor, ``ROW_CHUNK`` rows at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import conninfo

from monitor.values import Entry

ROW_CHUNK = 5000
KNOWN_HEAD = "6c1c0c2f8a1b"
TABLES = ("pv", "tag_group", "tag", "pv_tag", "snapshot", "snapshot_value", "api_key")


class SourceError(Exception):
    """The source cannot be read as a FastAPI Squirrel database."""


def safe_dsn(dsn: str) -> str:
    """The DSN without its password (for messages and the audit trail)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    parts.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()) if v is not None)


# --- decoding of one stored side ---------------------------------------------------------------


def _loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Python's json writes NaN/Infinity, which orjson refuses; a double-encoded value keeps
        # them inside its string. Anything still unreadable is a plain string value.
        try:
            return json.loads(text)
        except ValueError:
            return text


def epoch(ts: Any) -> float | None:
    """A timestamp (ISO 8601 text, naive meaning UTC, or epoch seconds) as UTC epoch seconds."""
    if ts is None or isinstance(ts, bool):
        return None
    if isinstance(ts, int | float):
        return float(ts) if math.isfinite(ts) else None
    if isinstance(ts, datetime):
        parsed = ts
    else:
        try:
            parsed = datetime.fromisoformat(str(ts))
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _int_or_none(x: Any) -> int | None:
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, int):
        return x
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def unwrap(text: str | bytes | None) -> Any:
    """The stored JSON of one side as Python, double encoding removed: a dict, a bare value,
    or None for SQL NULL and JSON null."""
    if text is None:
        return None
    data = _loads(text)
    # A JSON string that itself holds JSON (the FastAPI cache path); at most twice more.
    for _ in range(2):
        if not isinstance(data, str):
            break
        stripped = data.lstrip()
        if stripped[:1] not in ("{", "["):
            break
        inner = _loads(data)
        if inner is data:  # not JSON after all: a string value
            break
        data = inner
    return data


def entry_from_json(text: str | bytes | None) -> Entry | None:
    """One stored side as an entry (``monitor.values``), None when nothing was captured.

    Missing metadata stays None (the FastAPI monitor dropped status, severity and timestamps
    of cached values). An integer value with ``enum_strs`` beside it is an enum (its index);
    without them an enum is the integer index it was saved as.
    """
    data = unwrap(text)
    if data is None:
        return None
    if not isinstance(data, dict):
        return {"value": data}
    value = data.get("value")
    entry: Entry = {
        "value": value,
        "status": _int_or_none(data.get("status")),
        "severity": _int_or_none(data.get("severity")),
        "timestamp": epoch(data.get("timestamp")),
    }
    for key in ("units", "precision", "upper_ctrl_limit", "lower_ctrl_limit"):
        if data.get(key) is not None:
            entry[key] = data[key]
    strs = data.get("enum_strs")
    if isinstance(strs, list) and strs:
        entry["enum_strs"] = [str(s) for s in strs]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(strs):
            entry["index"] = value
            entry["value"] = str(strs[value])
    return entry


def raw_value(text: str | bytes | None) -> Any:
    """The ``value`` a side holds as the FastAPI Squirrel serves it (verification's reference,
    decoded without the entry rules above)."""
    data = unwrap(text)
    return data.get("value") if isinstance(data, dict) else data


# --- the source database -------------------------------------------------------------------


@dataclass(slots=True)
class SourceValue:
    """One ``snapshot_value`` row as streamed (``setpoint``/``readback`` are the JSON text)."""

    pv_id: str
    pv_name: str
    setpoint_address: str | None
    readback_address: str | None
    setpoint: str | None
    readback: str | None
    status: int | None
    severity: int | None
    timestamp: float | None


_VALUES_SQL = (
    "SELECT sv.pv_id::text, sv.pv_name, pv.setpoint_address, pv.readback_address,"
    " sv.setpoint_value::text, sv.readback_value::text, sv.status, sv.severity,"
    " extract(epoch FROM sv.timestamp)::float8"
    " FROM snapshot_value sv LEFT JOIN pv ON pv.id = sv.pv_id WHERE sv.snapshot_id = %s"
)


class Source:
    """A read-only, repeatable-read view of a FastAPI Squirrel database (module docstring)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = safe_dsn(dsn)
        try:
            self.conn = psycopg.connect(dsn, application_name="squirrel-import-fastapi")
        except psycopg.Error as exc:
            raise SourceError(f"cannot connect to {self.dsn}: {exc}".strip()) from None
        self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self.conn.read_only = True
        self._cursors = 0
        self.head = self._check()

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> str | None:
        rows = self.rows(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            [list(TABLES)],
        )
        missing = sorted(set(TABLES) - {r[0] for r in rows})
        if missing:
            raise SourceError(
                f"{self.dsn} is not a FastAPI Squirrel database: no table {', '.join(missing)}"
            )
        try:
            with self.conn.transaction(savepoint_name="head"):
                head = self.rows("SELECT version_num FROM alembic_version")
        except psycopg.errors.UndefinedTable:
            return None
        return head[0][0] if head else None

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """All rows of a small query (inside the one source transaction)."""
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def stream(self, sql: str, params: Any = None) -> Iterator[tuple[Any, ...]]:
        """Rows of a large query through a server-side cursor, ``ROW_CHUNK`` at a time."""
        self._cursors += 1
        with self.conn.cursor(name=f"import_{self._cursors}") as cur:
            cur.itersize = ROW_CHUNK
            cur.execute(sql, params)
            yield from cur

    def count(self, table: str) -> int:
        assert table in TABLES
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])

    def values(self, snapshot_id: str) -> Iterator[SourceValue]:
        """Every value row of one snapshot, streamed."""
        for r in self.stream(_VALUES_SQL, [snapshot_id]):
            yield SourceValue(*r)

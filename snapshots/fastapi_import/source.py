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
import queue
import threading
from collections.abc import Generator, Iterator
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


_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 (naive on purpose: naive source times are UTC)


def epoch(ts: Any) -> float | None:
    """A timestamp (ISO 8601 text, naive meaning UTC, or epoch seconds) as UTC epoch seconds."""
    if type(ts) is str:
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if parsed.tzinfo is None:  # naive: UTC (the FastAPI Squirrel's datetime.utcnow())
            return (parsed - _EPOCH).total_seconds()
        return parsed.timestamp()
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
        stripped = data.strip()
        if stripped[:1] not in ("{", "[") and stripped != "null":  # json.dumps(None) too
            break
        inner = _loads(data)
        if inner is data:  # not JSON after all: a string value
            break
        data = inner
    return data


_BASE_KEYS = frozenset(("value", "status", "severity", "timestamp"))
_META_KEYS = ("units", "precision", "upper_ctrl_limit", "lower_ctrl_limit")
BASE_ENTRY_SIZE = 4
"""An entry with no more keys than this carries no display metadata (``has_meta``)."""


def entry_from_json(text: str | bytes | None) -> Entry | None:
    """One stored side as an entry (``monitor.values``), None when nothing was captured.

    Missing metadata stays None (the FastAPI monitor dropped status, severity and timestamps
    of cached values); metadata keys are present only when they hold something. An integer
    value with ``enum_strs`` beside it is an enum (its index); without them an enum is the
    integer index it was saved as. (Runs 4M times for 2M values: the common case first.)
    """
    if text is None:
        return None
    try:
        data = orjson.loads(text)  # the usual case: the object's JSON (Source undid the string)
    except orjson.JSONDecodeError:
        data = None
    if type(data) is not dict:
        data = unwrap(text)
        if data is None:
            return None
        if type(data) is not dict:
            return {"value": data}
    status = data.get("status")
    severity = data.get("severity")
    ts = data.get("timestamp")
    entry: Entry = {
        "value": data.get("value"),
        "status": status if status is None or type(status) is int else _int_or_none(status),
        "severity": (
            severity if severity is None or type(severity) is int else _int_or_none(severity)
        ),
        "timestamp": None if ts is None else epoch(ts),
    }
    if data.keys() <= _BASE_KEYS:
        return entry
    for key in _META_KEYS:
        if data.get(key) is not None:
            entry[key] = data[key]  # type: ignore[literal-required]
    strs = data.get("enum_strs")
    if isinstance(strs, list) and strs:
        value = entry["value"]
        entry["enum_strs"] = [str(s) for s in strs]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(strs):
            entry["index"] = value
            entry["value"] = str(strs[value])
    return entry


def has_meta(entry: Entry | None) -> bool:
    """Whether ``entry_from_json`` gave the entry display metadata (``codec.meta_key`` is then
    worth computing)."""
    return entry is not None and len(entry) > BASE_ENTRY_SIZE


def raw_value(text: str | bytes | None) -> Any:
    """The ``value`` a side holds as the FastAPI Squirrel serves it (verification's reference,
    decoded without the entry rules above)."""
    data = unwrap(text)
    return data.get("value") if isinstance(data, dict) else data


# --- the source database -------------------------------------------------------------------


SourceValue = tuple[
    str, str, "str | None", "str | None", "int | None", "int | None", "float | None"
]
"""One ``snapshot_value`` row as streamed: pv_id, pv_name, setpoint JSON, readback JSON, the
row's status, severity and timestamp (epoch seconds)."""


def _side_sql(column: str) -> str:
    # The double encoding is undone by the source's server, on its own core: the JSON text of
    # the object inside the string. (A bare string value stays a JSON string; ``unwrap`` still
    # undoes any encoding left.)
    return (
        f"CASE WHEN jsonb_typeof({column}) = 'string' AND left({column} #>> '{{}}', 1) = '{{'"
        f" THEN {column} #>> '{{}}' ELSE {column}::text END"
    )


_VALUES_SQL = (
    "SELECT pv_id::text, pv_name, "
    + _side_sql("setpoint_value")
    + ", "
    + _side_sql("readback_value")
    + ", status, severity, extract(epoch FROM timestamp)::float8"
    " FROM snapshot_value WHERE snapshot_id = %s"
)


AHEAD = 2
_END = object()


def _ahead(chunks: Iterator[Any]) -> Iterator[Any]:
    """``chunks``, produced by a thread up to ``AHEAD`` items ahead of the consumer. The
    producer's errors are raised in the consumer; a consumer that stops early stops it."""
    items: queue.Queue[Any] = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for item in chunks:
                while not stop.is_set():
                    try:
                        items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            failure.append(exc)
        finally:
            if isinstance(chunks, Generator):
                chunks.close()
            items.put(_END)

    thread = threading.Thread(target=produce, name="import-source", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not _END:
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                continue
        thread.join()
    if failure:
        raise failure[0]


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

    def values(self, snapshot_id: str) -> Iterator[list[SourceValue]]:
        """Every value row of one snapshot (``SourceValue``), in lists of ``ROW_CHUNK`` rows,
        fetched ahead by a thread while the caller works on the previous list: the source's
        server produces rows while we encode (at most ``AHEAD`` lists wait; bounded memory)."""
        return _ahead(self._chunks(_VALUES_SQL, [snapshot_id]))

    def _chunks(self, sql: str, params: Any) -> Iterator[list[SourceValue]]:
        self._cursors += 1
        with self.conn.cursor(name=f"import_{self._cursors}") as cur:
            cur.execute(sql, params)
            while rows := cur.fetchmany(ROW_CHUNK):
                yield rows

    def addresses(self) -> dict[str, tuple[str | None, str | None]]:
        """PV id (text) -> its setpoint and readback address, as snapshot values record them."""
        rows = self.rows("SELECT id::text, setpoint_address, readback_address FROM pv")
        return {r[0]: (r[1], r[2]) for r in rows}

"""Verification after an import: every source row is here (by id), every snapshot holds as many
values as in the source, and a random sample of values reads back as the source has them.

The sampled values are compared on the wire's terms (``codec.side_wire_value``: an enum as its
index, arrays as lists) with the source's JSON decoded on its own (``source.raw_value``), not
with the entries the import built, so a decoding mistake of the import shows here.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

from django.db import connection

from snapshots.codec import side_wire_value
from snapshots.fastapi_import.source import Source, raw_value

SMALL = 20_000  # up to this many source values, the sample is drawn exactly (ORDER BY random())


def verify(
    *,
    source: Source,
    phases: Iterable[str],
    sample: int = 500,
    differing: Collection[Any] = (),
) -> list[str]:
    """Mismatches between the source and ours (empty: verified). The tag links of the PVs in
    ``differing`` (left alone, as the summary says) are not compared."""
    phases = set(phases)
    problems: list[str] = []
    if "catalog" in phases:
        for table in ("tag_group", "tag", "pv"):
            problems += _ids_present(source, table)
        problems += _links_present(source, set(differing))
    if "snapshots" in phases:
        problems += _snapshots_present(source)
        problems += _sample_values(source, sample)
    if "keys" in phases:
        problems += _keys_equal(source)
    return problems


def _ours(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _missing(table: str, wanted: set[Any], have: set[Any]) -> list[str]:
    gone = wanted - have
    if not gone:
        return []
    some = ", ".join(sorted(str(x) for x in gone)[:5])
    return [f"{table}: {len(gone)} of {len(wanted)} source rows are not here (e.g. {some})"]


def _ids_present(source: Source, table: str) -> list[str]:
    wanted = {r[0] for r in source.rows(f"SELECT id FROM {table}")}
    have = {r[0] for r in _ours(f"SELECT id FROM {table} WHERE id = ANY(%s)", [list(wanted)])}
    return _missing(table, wanted, have)


def _links_present(source: Source, differing: set[Any]) -> list[str]:
    wanted = {r for r in source.rows("SELECT pv_id, tag_id FROM pv_tag") if r[0] not in differing}
    pv_ids = list({pv for pv, _ in wanted})
    have = set(_ours("SELECT pv_id, tag_id FROM pv_tag WHERE pv_id = ANY(%s)", [pv_ids]))
    return _missing("pv_tag", wanted, have)


def _snapshots_present(source: Source) -> list[str]:
    wanted = {
        r[0]: r[1:]
        for r in source.rows(
            "SELECT s.id, s.title, s.created_at,"
            " (SELECT count(*) FROM snapshot_value v WHERE v.snapshot_id = s.id) FROM snapshot s"
        )
    }
    have = {
        r[0]: r[1:]
        for r in _ours(
            "SELECT s.id, s.title, s.created_at,"
            " (SELECT count(*) FROM snapshot_value v WHERE v.snapshot_id = s.id)"
            " FROM snapshot s WHERE s.id = ANY(%s)",
            [list(wanted)],
        )
    }
    problems = _missing("snapshot", set(wanted), set(have))
    for sid, (title, created, n) in wanted.items():
        if sid not in have:
            continue
        _, our_created, our_n = have[sid]
        if our_n != n:
            problems.append(f"snapshot {title!r} ({sid}): {our_n} values here, {n} in the source")
        if our_created != created:
            problems.append(f"snapshot {title!r} ({sid}): created {our_created}, not {created}")
    return problems


def _draw(source: Source, n: int) -> list[tuple[Any, ...]]:
    columns = "snapshot_id::text, pv_id::text, pv_name, setpoint_value::text, readback_value::text"
    total = source.count("snapshot_value")
    if n <= 0 or total == 0:
        return []
    if total <= SMALL:
        return source.rows(f"SELECT {columns} FROM snapshot_value ORDER BY random() LIMIT %s", [n])
    # Pages at random, not a full scan of millions of rows; four times over for a full sample.
    percent = min(100.0, 400.0 * n / total)
    return source.rows(
        f"SELECT {columns} FROM snapshot_value TABLESAMPLE SYSTEM (%s) LIMIT %s", [percent, n]
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _sample_values(source: Source, n: int) -> list[str]:
    problems: list[str] = []
    sql = (
        "SELECT sp_kind, sp_num, sp_text, sp_array, rb_kind, rb_num, rb_text, rb_array"
        " FROM snapshot_value WHERE snapshot_id = %s AND pv_name = %s"
        " AND pv_id IS NOT DISTINCT FROM %s::uuid"
    )
    for snapshot_id, pv_id, name, sp_json, rb_json in _draw(source, n):
        rows = _ours(sql, [snapshot_id, name, pv_id]) or _ours(
            sql.replace(" AND pv_id IS NOT DISTINCT FROM %s::uuid", ""), [snapshot_id, name]
        )
        if len(rows) != 1:
            problems.append(f"value {name} of snapshot {snapshot_id}: {len(rows)} rows here")
            continue
        row = rows[0]
        for side, text, cols in (("setpoint", sp_json, row[:4]), ("readback", rb_json, row[4:])):
            expected = raw_value(text)
            got = side_wire_value(*cols)
            if not _same(got, expected):
                problems.append(
                    f"value {name} of snapshot {snapshot_id}: {side} {got!r} here, "
                    f"{expected!r} in the source"
                )
    return problems


def _keys_equal(source: Source) -> list[str]:
    """Every source key is here with its token's hash (its other fields may differ here on
    purpose: the summary counts those as differing)."""
    wanted = {r[0]: r[1:] for r in source.rows("SELECT id, token_hash, app_name FROM api_key")}
    have = {
        r[0]: r[1]
        for r in _ours("SELECT id, token_hash FROM api_key WHERE id = ANY(%s)", [list(wanted)])
    }
    problems = _missing("api_key", set(wanted), set(have))
    for kid, (token_hash, name) in wanted.items():
        if kid in have and have[kid] != token_hash:
            problems.append(f"api key {name!r} ({kid}): another token hash here")
    return problems

"""Writes into our database that the phases share: COPY of rows that keep the source's ids and
dates (an ORM insert would stamp ``created_at`` with now), and updates from a temporary table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` (values in ``columns`` order) into ``table``; the number of rows."""
    n = 0
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def update_rows(
    table: str, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, stamp: bool
) -> int:
    """Set ``columns`` of the rows of ``table`` whose ``key`` matches (each row: key value,
    then ``columns`` in order), through a temporary table filled with COPY: one UPDATE
    whatever the count. ``stamp`` also sets ``updated_at`` to now. Returns rows updated."""
    if not rows:
        return 0
    temp = f"import_{table}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE {temp} ON COMMIT DROP AS"
            f" SELECT {key}, {', '.join(columns)} FROM {table} WITH NO DATA"
        )
    copy_rows(temp, [key, *columns], rows)
    assignments = [f"{c} = t.{c}" for c in columns]
    if stamp:
        assignments.append("updated_at = now()")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {', '.join(assignments)} FROM {temp} t"
            f" WHERE {table}.{key} = t.{key}"
        )
        count = cursor.rowcount
        cursor.execute(f"DROP TABLE {temp}")
    return count

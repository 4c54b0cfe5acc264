"""Reads of snapshots that need care: the tag filter of the list, and the one streaming query
that serves a snapshot's values (50K rows) without building model instances.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection, models


class SnapshotQuerySet(models.QuerySet):
    """Chainable reads of ``Snapshot``."""

    def titled(self, text: str | None) -> SnapshotQuerySet:
        """Title contains ``text`` (case-insensitive); no filter when empty."""
        return self.filter(title__icontains=text) if text else self

    def holding_tags(self, tag_ids: Sequence[uuid.UUID]) -> SnapshotQuerySet:
        """Snapshots holding a value whose PV currently carries any of ``tag_ids``.

        One EXISTS per snapshot, driven from the (few) tagged PVs through the index on
        ``snapshot_value.pv_id``, so it never scans a snapshot's 50K values.
        """
        if not tag_ids:
            return self
        from snapshots.models import SnapshotValue
        from tags.models import Tag

        tagged_pvs = Tag.pvs.through.objects.filter(tag_id__in=list(tag_ids)).values("pv_id")
        holding = SnapshotValue.objects.filter(
            snapshot_id=models.OuterRef("pk"), pv_id__in=tagged_pvs
        )
        return self.filter(models.Exists(holding))

    def newest_first(self) -> SnapshotQuerySet:
        return self.order_by("-created_at", "-id")


def snapshot_queryset() -> SnapshotQuerySet:
    """``Snapshot`` rows as a SnapshotQuerySet (until the model declares it as its manager)."""
    from snapshots.models import Snapshot

    manager_qs = Snapshot.objects.all()
    if isinstance(manager_qs, SnapshotQuerySet):
        return manager_qs
    return SnapshotQuerySet(model=Snapshot)


# --- the values of one snapshot, streamed ------------------------------------------------------

_SIDE = ("kind", "num", "text", "array", "status", "severity", "ts", "source", "age")
_SIDE += ("connected", "error")
_META = ("units", "precision", "upper_ctrl_limit", "lower_ctrl_limit")
SIDE_WIDTH = len(_SIDE) + len(_META)
"""Columns per side in a ``snapshot_value_rows`` row: ``_SIDE`` then ``_META``."""

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
    + ", ".join(f"sv.sp_{c}" for c in _SIDE)
    + ", "
    + ", ".join(f"spm.{c}" for c in _META)
    + ", "
    + ", ".join(f"sv.rb_{c}" for c in _SIDE)
    + ", "
    + ", ".join(f"rbm.{c}" for c in _META)
    + ", tg.tags"
    # The page is chosen first, so the joins below run only for the rows returned.
    " FROM (SELECT * FROM snapshot_value WHERE snapshot_id = %s{where}"
    "       ORDER BY pv_name, id{page}) sv"
    " LEFT JOIN pv ON pv.id = sv.pv_id"
    " LEFT JOIN value_meta spm ON spm.id = sv.sp_meta_id"
    " LEFT JOIN value_meta rbm ON rbm.id = sv.rb_meta_id"
    "{tags}"
    " ORDER BY sv.pv_name, sv.id"
)
"""Row: pv_id (text|None), pv_name, current setpoint and readback address (None when the PV
is gone), the setpoint side, the readback side (``SIDE_WIDTH`` columns each; ``ts`` in epoch
seconds: loading timestamptz values costs psycopg 0.5 s per 100K), and the PV's current tags
as JSON text ``[{id, name, groupName}]`` (None when it has none)."""


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

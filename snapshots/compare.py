"""Comparison of snapshots with each other and with the live machine (contract §6.1).

The tolerance rule is ``snapshots.tolerance``; stored sides are decoded by ``snapshots.codec``.
Rows are read straight from the typed columns (no model instances) so that 50K × 50K stays
well inside a second and a half.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.db import connection

from monitor import cache
from pvs.models import PV
from snapshots.codec import (
    KIND_ENUM,
    KIND_FLOAT,
    KIND_INT,
    KIND_STRING,
    RawSide,
    Side,
    absent_sql,
    select_raw,
    side_from_columns,
    side_from_entry,
)
from snapshots.models import Snapshot
from snapshots.tolerance import (
    array_compare,
    is_array,
    table_differing_cells,
    within_tolerance,
)
from squirrel.exceptions import NotFound
from squirrel.perf import gc_paused

LIVE = "live"


class Row(NamedTuple):
    """One PV of a snapshot as the comparison sees it.

    ``setpoint``/``readback`` hold a Side, or the stored columns (RawSide) decoded only when
    needed: most rows of a comparison are plain floats within tolerance, compared inline.
    A NamedTuple, so that 50K of them are built at C speed (``Row._make``).
    """

    pv_id: str | None
    pv_name: str
    setpoint_address: str | None
    readback_address: str | None
    abs_tol: float
    rel_tol: float
    setpoint: Side | RawSide | None
    readback: Side | RawSide | None


def _decoded(side: Side | RawSide | None) -> Side | None:
    if type(side) is tuple:
        return side_from_columns(*side)
    return side  # type: ignore[return-value]


_ROWS_SQL = (
    "SELECT sv.pv_id::text, sv.pv_name, sv.setpoint_address, sv.readback_address,"
    " COALESCE(pv.abs_tolerance, 0), COALESCE(pv.rel_tolerance, 0), "
    + ", ".join([select_raw("sp"), select_raw("rb"), absent_sql("sp"), absent_sql("rb")])
    + " FROM snapshot_value sv LEFT JOIN pv ON pv.id = sv.pv_id WHERE sv.snapshot_id = %s"
)
"""Row: pv_id, pv_name, addresses, tolerances, the setpoint and readback sides (``RAW_SIDE``
columns each), then whether each side is absent."""


def snapshot_rows(*, snapshot_id: uuid.UUID) -> list[Row]:
    """Every value row of a snapshot with the PV's current tolerances (0/0 if it is gone)."""
    with connection.cursor() as cursor:
        cursor.execute(_ROWS_SQL, [snapshot_id])
        raw = cursor.fetchall()
    make = Row._make
    return [
        make(
            (
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                None if r[20] else r[6:13],
                None if r[21] else r[13:20],
            )
        )
        for r in raw
    ]


def _fast_within(x1: Any, x2: Any, abs_tol: float, rel_tol: float) -> bool | None:
    """The rule for two stored sides of the same plain kind without decoding them (the
    common case: numbers, enum labels, strings, no error); None when the full path must
    decide (other kinds, errors, absent values). Indexes the ``codec.RAW_SIDE`` layout in
    place: 0 kind, 1 num, 2 text, 6 error."""
    if x1 is None and x2 is None:
        return True
    if type(x1) is not tuple or type(x2) is not tuple:
        return None
    kind = x1[0]
    if kind != x2[0] or x1[6] is not None or x2[6] is not None:
        return None
    if kind in (KIND_FLOAT, KIND_INT):
        n1, n2 = x1[1], x2[1]
        if n1 is None or n2 is None:
            return None
        d = abs(n1 - n2)
        return d <= abs_tol or (rel_tol > 0 and n1 != 0 and d / abs(n1) <= rel_tol)
    if kind in (KIND_ENUM, KIND_STRING):
        t1, t2 = x1[2], x2[2]
        if t1 is None or t2 is None:
            return None
        return t1 == t2
    return None


# --- The comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class CompareFilters:
    """Which rows the answer lists: only differences, PVs with any of these tags, and rows
    where either side has one of these qualities."""

    only_different: bool = True
    tag_ids: tuple[str, ...] = ()
    qualities: tuple[str, ...] = ()


@dataclass
class Comparison:
    """The result of a comparison, as the contract's ComparisonResultDTO plus extras."""

    snapshot1_id: str
    snapshot2_id: str
    entries: list[dict[str, Any]] = field(default_factory=list)
    match_count: int = 0
    difference_count: int = 0
    only_in_1: int = 0
    only_in_2: int = 0
    setpoint_differences: int = 0
    readback_differences: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "snapshot1Id": self.snapshot1_id,
            "snapshot2Id": self.snapshot2_id,
            "differences": self.entries,
            "matchCount": self.match_count,
            "differenceCount": self.difference_count,
            "summary": {
                "total": self.match_count + self.difference_count,
                "onlyIn1": self.only_in_1,
                "onlyIn2": self.only_in_2,
                "setpointDifferences": self.setpoint_differences,
                "readbackDifferences": self.readback_differences,
            },
        }


def _side_detail(
    s1: Side | None, s2: Side | None, *, abs_tol: float, rel_tol: float
) -> dict[str, Any] | None:
    """Compare one side; None when neither snapshot has a value for it (not compared)."""
    c1 = s1.comparable if s1 is not None else None
    c2 = s2.comparable if s2 is not None else None
    if c1 is None and c2 is None:
        return None
    detail: dict[str, Any] = {
        "value1": s1.wire if s1 is not None else None,
        "value2": s2.wire if s2 is not None else None,
    }
    if s1 is not None and s1.label is not None or s2 is not None and s2.label is not None:
        detail["label1"] = s1.label if s1 is not None else None
        detail["label2"] = s2.label if s2 is not None else None
    if type(c1) is float and type(c2) is float:  # the common case, inlined
        d = abs(c1 - c2)
        detail["withinTolerance"] = d <= abs_tol or (
            rel_tol > 0 and c1 != 0 and d / abs(c1) <= rel_tol
        )
    elif is_array(c1) and is_array(c2):
        diff = array_compare(c1, c2, abs_tol=abs_tol, rel_tol=rel_tol)
        detail["withinTolerance"] = diff.within
        detail["differingElements"] = diff.differing
        detail["maxAbsDelta"] = diff.max_abs_delta
    elif type(c1) is dict and type(c2) is dict and "columns" in c1 and "columns" in c2:
        cells = table_differing_cells(c1, c2, abs_tol=abs_tol, rel_tol=rel_tol)
        detail["withinTolerance"] = cells == 0
        detail["differingCells"] = cells
    else:
        detail["withinTolerance"] = within_tolerance(c1, c2, abs_tol=abs_tol, rel_tol=rel_tol)
    detail["quality1"] = s1.quality if s1 is not None else None
    detail["quality2"] = s2.quality if s2 is not None else None
    return detail


def _key(row: Row) -> str:
    return row.pv_id if row.pv_id is not None else f"name:{row.pv_name}"


def rows_compare(
    *,
    rows1: Iterable[Row],
    rows2: Iterable[Row],
    snapshot1_id: str,
    snapshot2_id: str,
    filters: CompareFilters,
    tagged_pv_ids: set[str] | None = None,
) -> Comparison:
    """Compare two sets of rows keyed by PV over their union (contract §6.1)."""
    by1 = {_key(r): r for r in rows1}
    by2 = {_key(r): r for r in rows2}
    result = Comparison(snapshot1_id=snapshot1_id, snapshot2_id=snapshot2_id)
    qualities = set(filters.qualities)
    fast = not qualities and filters.only_different
    for key in by1.keys() | by2.keys():
        r1, r2 = by1.get(key), by2.get(key)
        if tagged_pv_ids is not None:
            pv_id = (r1 or r2).pv_id  # type: ignore[union-attr]
            if pv_id is None or pv_id not in tagged_pv_ids:
                continue
        ref = r1 if r1 is not None else r2
        assert ref is not None
        abs_tol, rel_tol = ref.abs_tol, ref.rel_tol
        if (
            fast
            and r1 is not None
            and r2 is not None
            and _fast_within(r1.setpoint, r2.setpoint, abs_tol, rel_tol)
            and _fast_within(r1.readback, r2.readback, abs_tol, rel_tol)
        ):
            result.match_count += 1
            continue
        sp = _side_detail(
            _decoded(r1.setpoint) if r1 else None,
            _decoded(r2.setpoint) if r2 else None,
            abs_tol=abs_tol,
            rel_tol=rel_tol,
        )
        rb = _side_detail(
            _decoded(r1.readback) if r1 else None,
            _decoded(r2.readback) if r2 else None,
            abs_tol=abs_tol,
            rel_tol=rel_tol,
        )
        sp_ok = sp is None or sp["withinTolerance"]
        rb_ok = rb is None or rb["withinTolerance"]
        within = sp_ok and rb_ok and r1 is not None and r2 is not None
        if qualities and not any(
            d is not None and (d["quality1"] in qualities or d["quality2"] in qualities)
            for d in (sp, rb)
        ):
            continue
        if within:
            result.match_count += 1
        else:
            result.difference_count += 1
            result.setpoint_differences += not sp_ok
            result.readback_differences += not rb_ok
            result.only_in_1 += r2 is None
            result.only_in_2 += r1 is None
        if within and filters.only_different:
            continue
        main = sp if sp is not None else rb
        result.entries.append(
            {
                "pvId": ref.pv_id,
                "pvName": r1.pv_name if r1 is not None else r2.pv_name,  # type: ignore[union-attr]
                "value1": main["value1"] if main else None,
                "value2": main["value2"] if main else None,
                "withinTolerance": within,
                "setpoint": sp,
                "readback": rb,
                "inSnapshot1": r1 is not None,
                "inSnapshot2": r2 is not None,
            }
        )
    result.entries.sort(key=lambda e: e["pvName"])
    return result


def _snapshot_id(value: str) -> uuid.UUID:
    try:
        sid = uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"Snapshot {value} not found") from None
    if not Snapshot.objects.filter(pk=sid).exists():
        raise NotFound(f"Snapshot {value} not found")
    return sid


def _tagged_pv_ids(tag_ids: Sequence[str]) -> set[str] | None:
    if not tag_ids:
        return None
    ids = []
    for tag in tag_ids:
        try:
            ids.append(uuid.UUID(str(tag)))
        except ValueError:
            continue
    through = PV.tags.through
    return {str(p) for p in through.objects.filter(tag_id__in=ids).values_list("pv_id", flat=True)}


@gc_paused()
def snapshot_compare(
    *, snapshot1_id: str, snapshot2_id: str, filters: CompareFilters
) -> Comparison:
    """Compare two snapshots PV by PV; NotFound when either is missing."""
    sid1 = _snapshot_id(snapshot1_id)
    sid2 = _snapshot_id(snapshot2_id)
    return rows_compare(
        rows1=snapshot_rows(snapshot_id=sid1),
        rows2=snapshot_rows(snapshot_id=sid2),
        snapshot1_id=str(sid1),
        snapshot2_id=str(sid2),
        filters=filters,
        tagged_pv_ids=_tagged_pv_ids(filters.tag_ids),
    )


def live_rows(*, rows: list[Row]) -> list[Row]:
    """The same PVs as ``rows`` with their current values from the Redis cache (one HMGET)."""
    addresses: list[str] = []
    for r in rows:
        if r.setpoint_address:
            addresses.append(r.setpoint_address)
        if r.readback_address:
            addresses.append(r.readback_address)
    cached = cache.values_read(addresses)
    return [
        Row(
            pv_id=r.pv_id,
            pv_name=r.pv_name,
            setpoint_address=r.setpoint_address,
            readback_address=r.readback_address,
            abs_tol=r.abs_tol,
            rel_tol=r.rel_tol,
            setpoint=side_from_entry(cached.get(r.setpoint_address))
            if r.setpoint_address
            else None,
            readback=side_from_entry(cached.get(r.readback_address))
            if r.readback_address
            else None,
        )
        for r in rows
    ]


@gc_paused()
def snapshot_compare_live(*, snapshot_id: str, filters: CompareFilters) -> Comparison:
    """Compare a snapshot with the live values in the cache; ``snapshot2Id`` is ``"live"``."""
    sid = _snapshot_id(snapshot_id)
    rows = snapshot_rows(snapshot_id=sid)
    return rows_compare(
        rows1=rows,
        rows2=live_rows(rows=rows),
        snapshot1_id=str(sid),
        snapshot2_id=LIVE,
        filters=filters,
        tagged_pv_ids=_tagged_pv_ids(filters.tag_ids),
    )

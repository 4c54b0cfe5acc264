"""The safety snapshot of a restore: the current setpoints of exactly the PVs about to be
written, captured (cache first while the monitor is alive, else read on the restore's own
bridge) and stored as a snapshot of kind ``safety`` before any write.

Only setpoints: they are what a revert writes back, and they are what the plan reads to
classify each PV, so one read serves both (issue 18). Readbacks are read once, after the
writes, to verify them (their channels connect meanwhile).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from monitor import cache, values
from monitor.bridge import Bridge
from snapshots.capture import (
    CatalogRow,
    Completeness,
    captured_values_build,
    snapshot_store,
    values_collect,
)
from snapshots.models import Restore, Snapshot, ValueSource
from snapshots.restore.plan import PlanRow
from snapshots.restore.records import Item


@dataclass(frozen=True, slots=True)
class _Direct:
    """A value read directly for the safety snapshot (the shape values_collect returns)."""

    entry: values.Entry
    source: int = ValueSource.DIRECT
    age: float = 0.0


def safety_capture(catalog: list[Any], ca: Bridge) -> dict[str, Any]:
    """Capture the setpoints of ``catalog`` (snapshots.capture.CatalogRow):
    through the snapshot capture (``values_collect``: the cache for what the liveness rule
    calls current) while any monitor shard is alive, the rest read on the restore's own bridge
    (the channels it then writes); with no live shard, everything read on that bridge."""
    addresses = list(dict.fromkeys(c.setpoint_address for c in catalog if c.setpoint_address))
    if cache.liveness_read().any_alive:
        return values_collect(
            addresses=addresses,
            use_cache=True,
            progress=lambda *_: None,
            counts=Completeness(),
            epics=ca,
        )
    read = ca.read(addresses, settings.EPICS_TIMEOUT)
    return {a: _Direct(values.clean(read.get(a) or _no_answer())) for a in addresses}


def _no_answer() -> values.Entry:
    return {"value": None, "connected": False, "updated_at": time.time(), "error": "no answer"}


def catalog_rows(rows: Iterable[PlanRow | Item]) -> list[Any]:
    return [
        CatalogRow(
            pv_id=r.pv_id,
            setpoint_address=r.setpoint_address,
            readback_address=r.readback_address,
            config_address=None,
        )
        for r in rows
    ]


def safety_store(
    *, restore: Restore, catalog: list[Any], captured: dict[str, Any], items: list[Item]
) -> set[int]:
    """Save the captured values of ``catalog`` (exactly the PVs about to be written) as the
    safety snapshot of ``restore``; the ids of items whose setpoint could not be read."""
    wanted = {c.setpoint_address for c in catalog if c.setpoint_address}
    counts = Completeness()
    for address in wanted:
        got = captured.get(address)
        entry = got.entry if got is not None else None
        if got is None or entry is None or entry.get("value") is None:
            counts.failed += 1
        elif got.source == ValueSource.DIRECT:
            counts.reread += 1
        elif entry.get("error"):
            counts.stale += 1
        else:
            counts.live += 1
    rows = list(captured_values_build(catalog=catalog, captured=captured))
    unreadable = set()
    for item in items:
        got = captured.get(item.setpoint_address)  # type: ignore[arg-type]
        entry = got.entry if got is not None else None
        if entry is None or entry.get("value") is None or entry.get("error"):
            unreadable.add(item.id)
    with transaction.atomic():
        snapshot = snapshot_store(
            title=f"Safety before {restore.kind} of '{restore.snapshot_title}'"[:255],
            description=f"Values before {restore.kind} {restore.pk}, taken to revert it",
            created_by=restore.created_by,
            kind=Snapshot.Kind.SAFETY,
            rows=rows,
            counts=counts,
        )
        Restore.objects.filter(pk=restore.pk).update(safety_snapshot=snapshot)
    restore.safety_snapshot = snapshot
    return unreadable

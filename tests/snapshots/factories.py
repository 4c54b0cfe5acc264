"""Factories and seed helpers of the snapshots app: values are written with the real COPY path."""

from __future__ import annotations

import time
from collections.abc import Iterable

import factory
from django.db import transaction

from monitor import values
from pvs.models import PV
from snapshots.models import Snapshot, ValueSource
from snapshots.storage import CapturedValue, snapshot_values_write

NOW = 1_769_555_000.25  # a fixed IOC timestamp (2026-01-27T23:03:20.250000+00:00)


class SnapshotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Snapshot

    title = factory.Sequence(lambda n: f"snapshot {n}")


def entry(value, **extra) -> values.Entry:
    """A connected, alarm-free cache entry of ``value`` (override any key with ``extra``)."""
    base: values.Entry = {
        "value": value,
        "connected": True,
        "updated_at": NOW,
        "status": 0,
        "severity": 0,
        "timestamp": NOW,
    }
    base.update(extra)  # type: ignore[typeddict-item]
    return values.clean(base)


def captured(
    pv: PV | None,
    sp: values.Entry | None,
    rb: values.Entry | None = None,
    *,
    name: str | None = None,
    source: ValueSource = ValueSource.CACHE,
) -> CapturedValue:
    """A CapturedValue of ``pv`` (or of a PV that does not exist, with ``name``)."""
    return CapturedValue(
        pv_id=pv.pk if pv else None,
        pv_name=name or (pv.name if pv else ""),
        setpoint_address=pv.setpoint_address if pv else name,
        readback_address=pv.readback_address if pv else None,
        setpoint=sp,
        readback=rb,
        sp_source=source if sp is not None else None,
        rb_source=source if rb is not None else None,
        sp_age=0.5 if sp is not None else None,
        rb_age=0.25 if rb is not None else None,
    )


def snapshot_seed(title: str, rows: Iterable[CapturedValue], **fields) -> Snapshot:
    """A snapshot holding ``rows``, written as capture does: one transaction, COPY."""
    rows = list(rows)
    with transaction.atomic():
        snap = Snapshot.objects.create(title=title, pv_count=len(rows), **fields)
        snapshot_values_write(snapshot=snap, values=rows)
    return snap


def timed_seed(title: str, rows: list[CapturedValue]) -> tuple[Snapshot, float]:
    start = time.perf_counter()
    snap = snapshot_seed(title, rows)
    return snap, time.perf_counter() - start

"""Snapshot capture: every catalog PV's setpoint and readback, from the cache or over CA.

The capture (DESIGN.md "Snapshot"):
1. loads the catalog (PV id, setpoint and readback addresses) in one query;
2. reads every address from the Redis value hash in ONE round trip (HMGET);
3. reads directly over EPICS (monitor.bridge: bounded concurrency, per-PV timeout, circuit
   breakers) each value that is not current by the liveness rule (monitor.cache: missing,
   disconnected, in error, or owned by a monitor shard without a live heartbeat) -- or every
   value when ``use_cache`` is false. A current entry's age counts from when it was last known
   current: its ``updated_at``, or its shard's heartbeat if later (the live subscription would
   have delivered any change); a failed re-read keeps the cached value, marked (``stale``),
   else the value is ``failed``;
4. records each value's quality (source, age, connected, error) and the completeness counts;
5. writes the snapshot row and all values with COPY in ONE transaction, together with the
   job's completion, so a snapshot is visible only when complete and a retried job never
   produces a second one.

A worker killed mid-capture leaves nothing half-written (the transaction never committed); its
job, whose heartbeat stops, is failed by ``capture_reap_orphans`` when it is polled. An attempt
that finds its job failed (reaped, or a redelivered message after that) writes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction

from jobs import services as jobs
from jobs.models import Job
from monitor import bridge, cache, values
from monitor.bridge import Bridge
from pvs.models import PV
from snapshots import schedules
from snapshots.models import MetaPV, Snapshot, ValueSource
from snapshots.restore.selection import Selection
from snapshots.services import snapshot_title_clean
from snapshots.storage import CapturedValue, snapshot_values_write
from squirrel import audit
from squirrel.perf import gc_paused

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, str | None], None]
NO_ANSWER = "No answer from Channel Access"


def _no_progress(percent: int, message: str | None = None) -> None:
    return None


class CatalogRow(NamedTuple):
    """One PV of the catalog. ``catalog_load`` returns plain tuples of the same layout."""

    pv_id: uuid.UUID | str | None
    setpoint_address: str | None
    readback_address: str | None
    config_address: str | None


@dataclass
class Completeness:
    """How each captured value (setpoint or readback) was obtained."""

    live: int = 0  # from the cache, fresh and connected
    stale: int = 0  # the last cached value kept, because the direct read failed
    reread: int = 0  # read directly over Channel Access
    failed: int = 0  # no value at all


@dataclass(slots=True)
class _Captured:
    entry: values.Entry | None
    source: ValueSource | None
    age: float | None


def catalog_load(selection: Selection | None = None) -> list[CatalogRow]:
    """Every PV's id and addresses (or those of the subset ``selection`` names: ``pv_ids``
    and the tag filters, OR inside a group and AND across), in one query (plain tuples)."""
    if selection is not None and (selection.pv_ids is not None or selection.tag_filters):
        pvs = PV.objects.with_tag_filters(selection.tag_filters)
        if selection.pv_ids is not None:
            pvs = pvs.filter(pk__in=selection.pv_ids)
        return [
            CatalogRow(str(pk), sp, rb, config)
            for pk, sp, rb, config in pvs.values_list(
                "pk", "setpoint_address", "readback_address", "config_address"
            )
        ]
    with connection.cursor() as cursor:
        # id as text: the COPY writes it as text anyway, and 50K UUID objects cost 0.1 s.
        cursor.execute(
            "SELECT id::text, setpoint_address, readback_address, config_address FROM pv"
        )
        return cursor.fetchall()


def _failure(error: str | None) -> values.Entry:
    return {
        "value": None,
        "connected": False,
        "updated_at": time.time(),
        "error": error or NO_ANSWER,
    }


def _has_value(entry: values.Entry | None) -> bool:
    return entry is not None and entry.get("value") is not None


def values_collect(
    *,
    addresses: list[str],
    use_cache: bool,
    progress: ProgressFn,
    counts: Completeness,
    epics: Bridge | None = None,
) -> dict[str, _Captured]:
    """Every address's captured entry with its source and age; updates ``counts``. Direct
    reads go through ``epics`` (a restore passes the bridge it then writes on), else a bridge
    of the capture's own."""
    now = time.time()
    captured: dict[str, _Captured] = {}
    cached: dict[str, values.Entry] = {}
    if use_cache:
        progress(15, f"Reading {len(addresses)} values from cache...")
        liveness = cache.liveness_read()
        cached = cache.values_read(addresses)
        vouchers, shards = liveness.vouchers(), liveness.shards
        shard_of = cache.shard_of
        clean, source = values.clean, ValueSource.CACHE
        # Current: connected, no error, and its shard's monitor alive (module docstring,
        # step 3). The loop runs 95K times per capture: its tests are ordered and inlined.
        for address, entry in cached.items() if liveness.any_alive else ():
            if not entry.get("connected") or entry.get("error"):
                continue
            beat = vouchers[shard_of(address, shards)] if shards > 1 else vouchers[0]
            if beat is None:
                continue
            confirmed = entry.get("updated_at")
            if confirmed is None or confirmed < beat:
                confirmed = beat
            value: Any = entry.get("value")  # None is one of the cases type() dispatches on
            cls = type(value)
            if cls is float:
                if value - value != 0.0:  # NaN or infinite
                    entry = clean(entry)
            elif cls is not str and cls is not int and value is not None:
                entry = clean(entry)  # arrays: NaN/Inf elements out
            age = now - confirmed
            captured[address] = _Captured(entry, source, age if age > 0.0 else 0.0)
        counts.live = len(captured)
    to_read = [a for a in addresses if a not in captured]
    if to_read:
        progress(20, f"Reading {len(to_read)} PVs from EPICS...")

        def on_chunk(done: int, total: int) -> None:
            progress(20 + int(60 * done / total), f"Read {done}/{total} PVs")

        if epics is not None:
            direct = epics.read(to_read, settings.EPICS_TIMEOUT, on_chunk=on_chunk)
        else:
            direct = bridge.read(to_read, settings.EPICS_TIMEOUT, on_chunk=on_chunk)
        read_at = time.time()
        for address in to_read:
            read = direct.get(address)
            if read is not None and read.get("connected") and not read.get("error"):
                captured[address] = _Captured(values.clean(read), ValueSource.DIRECT, 0.0)
                counts.reread += 1
                continue
            if read is not None and read.get("connected") and read.get("error"):
                # Read fine but not finite: keep it (value null, error says so).
                captured[address] = _Captured(values.clean(read), ValueSource.DIRECT, 0.0)
                counts.reread += 1
                continue
            error = (read or {}).get("error") or NO_ANSWER
            old = cached.get(address)
            if _has_value(old):
                assert old is not None
                kept = values.clean(old)
                kept = {**kept, "error": f"Direct read failed: {error}"}
                kept_age = read_at - old["updated_at"] if old.get("updated_at") else None
                captured[address] = _Captured(kept, ValueSource.CACHE, kept_age)
                counts.stale += 1
            else:
                captured[address] = _Captured(_failure(error), ValueSource.DIRECT, None)
                counts.failed += 1
    return captured


def captured_values_build(
    *, catalog: list[CatalogRow], captured: dict[str, _Captured]
) -> Iterable[CapturedValue]:
    """One CapturedValue per PV from the captured entries of its addresses; the PV is
    recorded under its setpoint, else readback, else config address (contract §3.6)."""
    get = captured.get
    for pv_id, sp_address, rb_address, config_address in catalog:
        sp = get(sp_address) if sp_address else None
        rb = get(rb_address) if rb_address else None
        yield CapturedValue(
            pv_id,
            sp_address or rb_address or config_address or "",
            sp_address,
            rb_address,
            sp.entry if sp else None,
            rb.entry if rb else None,
            sp.source if sp else None,
            rb.source if rb else None,
            sp.age if sp else None,
            rb.age if rb else None,
        )


def meta_addresses() -> list[str]:
    """The meta-PVs: SQUIRREL_SNAPSHOT_META_PVS, then the admin's (``MetaPV``)."""
    admin = MetaPV.objects.values_list("address", flat=True)
    return list(dict.fromkeys([*settings.SNAPSHOT_META_PVS, *admin]))


def metadata_collect(
    *, captured: dict[str, _Captured], use_cache: bool, progress: ProgressFn
) -> dict[str, Any]:
    """Each meta-PV's value (wire encoding; null when it could not be read): what the
    capture already holds, else read like any value (cache, direct fallback)."""
    wanted = meta_addresses()
    missing = [a for a in wanted if a not in captured]
    extra = (
        values_collect(
            addresses=missing, use_cache=use_cache, progress=progress, counts=Completeness()
        )
        if missing
        else {}
    )
    out: dict[str, Any] = {}
    for address in wanted:
        got = captured.get(address) or extra.get(address)
        entry = got.entry if got is not None else None
        out[address] = values.finite(entry.get("value")) if entry is not None else None
    return out


@gc_paused()  # a million short-lived objects: keep the cyclic collector out
def snapshot_capture(
    *,
    title: object,
    description: str | None,
    use_cache: bool,
    created_by: str | None,
    job_id: str | None = None,
    progress: ProgressFn | None = None,
    kind: str = Snapshot.Kind.SNAPSHOT,
    selection: Selection | None = None,
    schedule_id: str | None = None,
) -> Snapshot:
    """Capture every catalog PV (or the subset ``selection`` names) and the meta-PVs, and
    save them as one snapshot (see the module docstring).

    With ``job_id``, the job is completed in the same transaction as the snapshot insert; if
    the job already has a result (another attempt committed first), that snapshot is returned
    and nothing is written.
    """
    title = snapshot_title_clean(title)
    report = progress or _no_progress
    report(5, "Reading PV addresses from database...")
    catalog = catalog_load(selection)
    addresses = list(dict.fromkeys(a for row in catalog for a in (row[1], row[2]) if a))
    counts = Completeness()
    captured = values_collect(
        addresses=addresses, use_cache=use_cache, progress=report, counts=counts
    )
    metadata = metadata_collect(captured=captured, use_cache=use_cache, progress=report)
    report(85, "Processing results...")
    rows = list(captured_values_build(catalog=catalog, captured=captured))
    # Reported before the transaction (progress written inside it would be invisible); five
    # points above the last step, so the job's throttle always lets it through.
    report(90, f"Saving {len(rows)} PV values to database...")
    with transaction.atomic():
        if job_id is not None:
            job = Job.objects.select_for_update().get(pk=job_id)
            if job.result_id:
                existing = Snapshot.objects.filter(pk=job.result_id).first()
                if existing is not None:
                    log.info("job %s already produced snapshot %s", job_id, existing.pk)
                    return existing
            if job.status == Job.Status.FAILED:
                raise jobs.JobAbandoned(
                    f"capture job {job_id} was failed while it ran ({job.error}); "
                    "its snapshot is not saved"
                )
        snapshot = snapshot_store(
            title=title,
            description=description,
            created_by=created_by,
            kind=kind,
            rows=rows,
            counts=counts,
            selection=selection.to_json()
            if selection is not None and _is_subset(selection)
            else None,
            schedule_id=schedule_id,
            metadata=metadata,
        )
        if job_id is not None:
            jobs.job_complete(
                job_id=job_id,
                result_id=str(snapshot.pk),
                message=snapshot_created_message(snapshot),
            )
    return snapshot


def snapshot_store(
    *,
    title: str,
    description: str | None,
    created_by: str | None,
    kind: str,
    rows: list[CapturedValue],
    counts: Completeness,
    selection: dict[str, Any] | None = None,
    schedule_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    actor: str | None = None,
) -> Snapshot:
    """Save a snapshot row with its completeness counts and every value (COPY), recorded in
    the audit (``actor``, else who it is created by, else ``system:capture``). Call it
    inside ONE ``transaction.atomic()`` with whatever must commit with it, so that the
    snapshot is visible only when complete."""
    snapshot = Snapshot(
        selection=selection,
        schedule_id=schedule_id,
        metadata=metadata or {},
        title=title,
        description=description,
        created_by=created_by,
        kind=kind,
        pv_count=len(rows),
        live_count=counts.live,
        stale_count=counts.stale,
        reread_count=counts.reread,
        failed_count=counts.failed,
    )
    snapshot.full_clean()
    snapshot.save()
    snapshot_values_write(snapshot=snapshot, values=rows)
    audit.record(
        actor or created_by or audit.system("capture"),
        "snapshot.create" if kind != Snapshot.Kind.IMPORTED else "snapshot.import",
        snapshot,
        summary=f"{kind} '{title}' ({len(rows)} values)",
        after={"title": title, "kind": kind, "pvCount": len(rows)},
        detail={"scheduleId": schedule_id} if schedule_id else None,
    )
    return snapshot


def _is_subset(selection: Selection | None) -> bool:
    return selection is not None and (selection.pv_ids is not None or bool(selection.tag_filters))


def capture_orphan_error(last_beat: datetime) -> str:
    """The error of a capture job whose worker died."""
    return (
        f"The worker stopped during the capture (last heartbeat {last_beat:%H:%M:%S} UTC); "
        "no snapshot was saved."
    )


def capture_reap_orphans(*, stale_after: float | None = None) -> list[Job]:
    """Fail running capture jobs whose worker stopped sending heartbeats (module docstring).
    Nothing of theirs is visible: the snapshot would have committed with the job."""
    return jobs.job_reap_stale(
        type=Job.Type.SNAPSHOT_CREATE, error=capture_orphan_error, stale_after=stale_after
    )


def snapshot_created_message(snapshot: Snapshot) -> str:
    return f"Snapshot created with {snapshot.pv_count} PV values"


def snapshot_capture_job(*, job: Job, progress: ProgressFn) -> jobs.JobOutcome:
    """The work of a ``snapshot_create`` job: capture with the job's stored parameters."""
    data = job.job_data or {}
    stored = data.get("selection")
    schedule_id = data.get("schedule_id")
    snapshot = snapshot_capture(
        title=data.get("title") or "",
        description=data.get("description") or data.get("comment"),
        use_cache=bool(data.get("use_cache", True)),
        created_by=job.created_by,
        job_id=str(job.pk),
        progress=progress,
        selection=(
            Selection.stored(stored.get("pvIds"), stored.get("tagFilters")) if stored else None
        ),
        schedule_id=schedule_id,
    )
    if schedule_id:
        # The schedule's retention right after its run; the snapshot is committed already,
        # so a failure here is logged (the sweep tries again), never the job's.
        try:
            schedules.retention_apply(schedule_id=schedule_id, actor=audit.system("retention"))
        except Exception:
            log.exception("retention after a run of schedule %s failed", schedule_id)
    return jobs.JobOutcome(result_id=str(snapshot.pk), message=snapshot_created_message(snapshot))

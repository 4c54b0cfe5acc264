"""snapshot_capture against the real Redis cache (and a Channel Access network where nobody
answers, for the values that must be re-read): sources, quality, completeness, atomicity."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs import services as jobs
from jobs.models import Job
from monitor import cache, events, values
from pvs.models import PV
from snapshots import capture, services
from snapshots.models import Snapshot, SnapshotValue, ValueKind, ValueSource
from squirrel.exceptions import Invalid

pytestmark = pytest.mark.django_db


def _cache(redis_client, entries: dict[str, values.Entry], *, monitor_alive: bool = True) -> None:
    """The monitor's cache holding ``entries``, with the monitor's heartbeat fresh (the cache is
    trusted only then: monitor.cache) unless ``monitor_alive`` is false."""
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in entries.items()})
    if monitor_alive:
        redis_client.set(events.heartbeat_key(), str(time.time()))


@pytest.fixture
def catalog(db):
    return [
        PV.objects.create(setpoint_address="C:A:SP", readback_address="C:A:RBV"),
        PV.objects.create(setpoint_address="C:ENUM:SP", readback_address="C:ENUM:RBV"),
        PV.objects.create(setpoint_address="C:STR:SP"),
        PV.objects.create(setpoint_address="C:WAVE:SP"),
        PV.objects.create(readback_address="C:RO:RBV"),
    ]


def _fresh(value, **extra) -> values.Entry:
    return {
        "value": value,
        "connected": True,
        "updated_at": time.time(),
        "status": 0,
        "severity": 0,
        "timestamp": time.time() - 1,
        **extra,
    }


def _all_fresh() -> dict[str, values.Entry]:
    return {
        "C:A:SP": _fresh(
            1.5, units="A", precision=3, upper_ctrl_limit=100.0, lower_ctrl_limit=-100.0
        ),
        "C:A:RBV": _fresh(1.51, units="A", precision=3),
        "C:ENUM:SP": _fresh("RUNNING", index=1, enum_strs=["STANDBY", "RUNNING"]),
        "C:ENUM:RBV": _fresh("RUNNING", index=1, enum_strs=["STANDBY", "RUNNING"]),
        "C:STR:SP": _fresh("mode-3"),
        "C:WAVE:SP": _fresh([0.0, 0.5, 1.0]),
        "C:RO:RBV": _fresh(7.25, status=3, severity=2),
    }


def _values(snapshot: Snapshot) -> dict[str, SnapshotValue]:
    return {v.pv_name: v for v in SnapshotValue.objects.filter(snapshot=snapshot)}


def test_all_fresh_from_cache(catalog, redis_client):
    _cache(redis_client, _all_fresh())
    snap = capture.snapshot_capture(
        title="  Cache  ", description="c", use_cache=True, created_by=None
    )
    assert snap.title == "Cache"
    assert (snap.pv_count, snap.live_count, snap.reread_count) == (5, 7, 0)
    assert (snap.stale_count, snap.failed_count) == (0, 0)
    rows = _values(snap)
    assert set(rows) == {"C:A:SP", "C:ENUM:SP", "C:STR:SP", "C:WAVE:SP", "C:RO:RBV"}
    a = rows["C:A:SP"]
    assert (a.sp_kind, a.sp_num, a.rb_num) == (ValueKind.FLOAT, 1.5, 1.51)
    assert a.sp_source == ValueSource.CACHE and a.sp_connected is True and a.sp_error is None
    assert 0 <= a.sp_age < 60
    assert a.sp_meta is not None and a.sp_meta.units == "A" and a.sp_meta.precision == 3
    enum = rows["C:ENUM:SP"]
    assert (enum.sp_kind, enum.sp_num, enum.sp_text) == (ValueKind.ENUM, 1.0, "RUNNING")
    assert rows["C:STR:SP"].sp_text == "mode-3"
    assert rows["C:WAVE:SP"].sp_array == [0.0, 0.5, 1.0]
    ro = rows["C:RO:RBV"]
    assert ro.sp_kind is None and ro.setpoint_address is None
    assert (ro.rb_num, ro.rb_status, ro.rb_severity) == (7.25, 3, 2)


def test_nan_is_stored_as_null_with_quality(catalog, redis_client):
    entries = _all_fresh()
    entries["C:A:SP"] = _fresh(float("nan"))
    entries["C:WAVE:SP"] = _fresh([1.0, float("inf"), 2.0])
    _cache(redis_client, entries)
    snap = capture.snapshot_capture(title="nan", description=None, use_cache=True, created_by=None)
    rows = _values(snap)
    a = rows["C:A:SP"]
    assert a.sp_num is None and a.sp_error == values.NON_FINITE
    assert a.sp_source == ValueSource.CACHE
    wave = rows["C:WAVE:SP"]
    assert wave.sp_error == values.NON_FINITE
    assert wave.sp_array is None or wave.sp_array[0] == 1.0


def test_missing_disconnected_in_error_are_reread_or_marked(
    catalog, redis_client, settings, quiet_epics
):
    settings.EPICS_TIMEOUT = 0.3
    entries = _all_fresh()
    entries["C:A:SP"] = {**_fresh(2.0), "updated_at": time.time() - 600}  # unchanged for 10 min
    entries["C:ENUM:SP"] = {**_fresh("STANDBY", index=0), "connected": False}  # disconnected
    del entries["C:STR:SP"]  # missing
    entries["C:RO:RBV"] = {**_fresh(3.0), "error": values.DISCONNECTED}
    _cache(redis_client, entries)
    started = time.monotonic()
    snap = capture.snapshot_capture(title="t", description=None, use_cache=True, created_by=None)
    # Nobody answers on this network: the direct reads fail within the per-PV timeout.
    assert time.monotonic() - started < 10
    assert (snap.live_count, snap.reread_count) == (4, 0)
    assert (snap.stale_count, snap.failed_count) == (2, 1)
    rows = _values(snap)
    # Unchanged but followed by a live monitor: current, its age counted from the heartbeat.
    assert rows["C:A:SP"].sp_source == ValueSource.CACHE and rows["C:A:SP"].sp_age < 60
    disc = rows["C:ENUM:SP"]
    assert disc.sp_text == "STANDBY" and disc.sp_connected is False and disc.sp_error
    assert disc.sp_source == ValueSource.CACHE and disc.sp_error.startswith("Direct read failed")
    missing = rows["C:STR:SP"]
    assert missing.sp_kind in (None, ValueKind.NONE) and missing.sp_text is None
    assert missing.sp_source == ValueSource.DIRECT and missing.sp_connected is False
    assert missing.sp_error
    # the fresh ones stayed from the cache
    assert rows["C:A:SP"].rb_source == ValueSource.CACHE and rows["C:A:SP"].rb_error is None


def test_a_dead_monitor_vouches_for_nothing_however_recent(
    catalog, redis_client, settings, quiet_epics
):
    """The probe's finding (issue 15, item 2): with the monitor dead, a value it cached a
    minute ago is not saved as live; it is re-read, and kept as stale (with its age and why)
    only when the re-read fails."""
    settings.EPICS_TIMEOUT = 0.3
    entries = _all_fresh()
    entries["C:A:SP"] = {**_fresh(2.0), "updated_at": time.time() - 600}
    del entries["C:STR:SP"]  # missing
    _cache(redis_client, entries, monitor_alive=False)
    redis_client.set(events.heartbeat_key(), str(time.time() - 60))  # died a minute ago
    snap = capture.snapshot_capture(title="d", description=None, use_cache=True, created_by=None)
    assert (snap.live_count, snap.reread_count) == (0, 0)
    assert (snap.stale_count, snap.failed_count) == (6, 1)
    rows = _values(snap)
    stale = rows["C:A:SP"]
    assert stale.sp_num == 2.0  # the last cached value is kept ...
    assert stale.sp_source == ValueSource.CACHE
    assert stale.sp_age > 590  # ... with its age ...
    assert stale.sp_error.startswith("Direct read failed")  # ... and why it is not fresh
    recent = rows["C:A:SP"]
    assert recent.rb_source == ValueSource.CACHE and recent.rb_error.startswith("Direct read")


def test_use_cache_false_reads_everything_directly(catalog, redis_client, settings, quiet_epics):
    settings.EPICS_TIMEOUT = 0.3
    _cache(redis_client, _all_fresh())
    snap = capture.snapshot_capture(title="d", description=None, use_cache=False, created_by=None)
    # Nothing answers and the cache is not consulted: every value failed.
    assert (snap.live_count, snap.stale_count, snap.failed_count) == (0, 0, 7)
    rows = _values(snap)
    assert all(r.sp_source in (None, ValueSource.DIRECT) for r in rows.values())
    assert rows["C:A:SP"].sp_num is None


def test_title_is_validated(catalog):
    for bad in (None, "", "   ", 5, "x" * 256, "a\x00b"):
        with pytest.raises(Invalid):
            capture.snapshot_capture(title=bad, description=None, use_cache=True, created_by=None)
    assert Snapshot.objects.count() == 0


def test_empty_catalog_gives_empty_snapshot(db, redis_client):
    snap = capture.snapshot_capture(title="e", description=None, use_cache=True, created_by=None)
    assert snap.pv_count == 0 and SnapshotValue.objects.filter(snapshot=snap).count() == 0


def test_job_is_completed_in_the_same_transaction_and_never_twice(catalog, redis_client):
    _cache(redis_client, _all_fresh())
    job = jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "j", "use_cache": True})
    jobs.job_start(job_id=job.pk)
    seen: list[tuple[int, str | None]] = []
    snap = capture.snapshot_capture(
        title="j",
        description=None,
        use_cache=True,
        created_by=None,
        job_id=str(job.pk),
        progress=lambda p, m=None: seen.append((p, m)),
    )
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.result_id == str(snap.pk)
    assert job.message == "Snapshot created with 5 PV values"
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)
    assert len(seen) >= 4
    # A retry after the commit returns the same snapshot and writes nothing.
    again = capture.snapshot_capture(
        title="j", description=None, use_cache=True, created_by=None, job_id=str(job.pk)
    )
    assert again.pk == snap.pk and Snapshot.objects.count() == 1


def test_an_attempt_whose_job_was_reaped_meanwhile_writes_nothing(catalog, redis_client):
    _cache(redis_client, _all_fresh())
    job = jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "r", "use_cache": True})
    jobs.job_start(job_id=job.pk)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))
    assert [j.pk for j in capture.capture_reap_orphans(stale_after=10)] == [job.pk]
    # The worker was only slow, not dead: its capture reaches the commit and finds the job failed.
    with pytest.raises(jobs.JobAbandoned, match="was failed while it ran"):
        capture.snapshot_capture(
            title="r", description=None, use_cache=True, created_by=None, job_id=str(job.pk)
        )
    assert Snapshot.objects.count() == 0 and SnapshotValue.objects.count() == 0
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and "no snapshot was saved" in job.error


def test_failed_write_leaves_nothing(catalog, redis_client):
    _cache(redis_client, _all_fresh())
    job = jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "x", "use_cache": True})
    jobs.job_start(job_id=job.pk)
    # A constraint that one row violates makes the COPY fail after the snapshot row went in.
    PV.objects.create(setpoint_address="C:LONG")
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE snapshot_value ADD CONSTRAINT t_no_long CHECK (pv_name <> 'C:LONG')"
        )
    with pytest.raises(Exception, match="t_no_long"):
        capture.snapshot_capture(
            title="x", description=None, use_cache=True, created_by=None, job_id=str(job.pk)
        )
    assert Snapshot.objects.count() == 0
    assert SnapshotValue.objects.count() == 0
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.result_id is None


def test_job_wrapper_runs_capture(catalog, redis_client):
    _cache(redis_client, _all_fresh())
    job = services.snapshot_create_enqueue(
        title="queued", description="d", use_cache=True, created_by="cli"
    )
    assert job.job_data == {
        "title": "queued",
        "description": "d",
        "comment": "d",
        "use_cache": True,
    }
    outcome = jobs.job_run(
        job_id=str(job.pk), work=capture.snapshot_capture_job, will_retry=lambda exc: False
    )
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.result_id == outcome.result_id
    snap = Snapshot.objects.get(pk=outcome.result_id)
    assert (snap.title, snap.description, snap.created_by) == ("queued", "d", "cli")


def test_enqueue_happens_on_commit(catalog, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.snapshot_create_enqueue(
            title="q", description=None, use_cache=False, created_by=None
        )
    assert len(callbacks) == 1
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING
    assert services.snapshot_create_queued_message(title="q", use_cache=False) == (
        "Snapshot creation queued for 'q' (direct EPICS)"
    )


def test_a_live_monitor_vouches_for_old_unchanged_values(
    catalog, redis_client, settings, quiet_epics
):
    settings.EPICS_TIMEOUT = 0.3
    entries = _all_fresh()
    entries["C:A:SP"] = {**_fresh(2.0), "updated_at": time.time() - 3600}  # unchanged for 1 h
    _cache(redis_client, entries)
    # The monitor's heartbeat is fresh: its subscription keeps the old value current.
    snap = capture.snapshot_capture(title="v", description=None, use_cache=True, created_by=None)
    assert (snap.live_count, snap.stale_count) == (7, 0)
    row = SnapshotValue.objects.get(snapshot=snap, pv_name="C:A:SP")
    assert row.sp_num == 2.0 and row.sp_source == ValueSource.CACHE and row.sp_age < 60
    # Two shards, shard 1's heartbeat old: the addresses it owns are re-read (and, nobody
    # answering here, kept as stale); shard 0's are still current.
    redis_client.set(events.shards_key(), "2")
    redis_client.set(events.heartbeat_key(1), str(time.time() - 3600))
    dead = {a for a in entries if cache.shard_of(a, 2) == 1}
    assert 0 < len(dead) < len(entries)
    snap = capture.snapshot_capture(title="w", description=None, use_cache=True, created_by=None)
    assert (snap.live_count, snap.stale_count) == (7 - len(dead), len(dead))
    errors = {}
    for row in _values(snap).values():
        if row.setpoint_address:
            errors[row.setpoint_address] = row.sp_error
        if row.readback_address:
            errors[row.readback_address] = row.rb_error
    assert {a for a, e in errors.items() if e and e.startswith("Direct read failed")} == dead
    assert all(errors[a] is None for a in set(errors) - dead)


def test_a_broker_that_refuses_the_task_fails_the_job(db):
    from kombu.exceptions import OperationalError

    class BrokerDown:  # the broker is the process boundary here
        def delay(self, job_id):
            raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    job = jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "b"})
    services._enqueue(BrokerDown(), str(job.pk))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("Could not queue the job: OperationalError: Error 111")

"""End to end with a REAL ``celery -A squirrel worker`` process (no eager mode).

The worker uses this run's test database (committed rows: ``transaction=True``) and Redis
prefix. A worker SIGKILLed mid-job leaves its message to be redelivered (acks late, visibility
timeout 10 s here): the next worker finishes it with exactly one snapshot -- unless a poll saw
the job's heartbeat go stale first and failed it, and then the redelivery leaves it failed.
"""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import call_command

from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots import services
from snapshots.models import Snapshot, SnapshotValue
from tests.capture.conftest import Worker, worker_env
from tests.conftest import payload

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def wait_job(job_id: str, *, timeout: float, until=("completed", "failed")) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.status in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} ({job.message}) after {timeout} s")


def test_worker_captures_from_cache(redis_client, workers, monitor_heartbeat):
    pvs = [
        PV.objects.create(setpoint_address=f"E2E:{i}:SP", readback_address=f"E2E:{i}:RBV")
        for i in range(50)
    ]
    now = time.time()
    redis_client.hset(
        events.values_hash(),
        mapping={
            address: values.pack(
                {"value": float(i), "connected": True, "updated_at": now, "severity": 0}
            )
            for i, pv in enumerate(pvs)
            for address in (pv.setpoint_address, pv.readback_address)
        },
    )
    workers.append(Worker(worker_env()).start())
    job = services.snapshot_create_enqueue(
        title="e2e", description="from worker", use_cache=True, created_by=None
    )
    job = wait_job(str(job.pk), timeout=30)
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])
    assert job.progress == 100
    assert job.message == "Snapshot created with 50 PV values"
    assert job.started_at is not None and job.completed_at is not None
    snap = Snapshot.objects.get(pk=job.result_id)
    assert (snap.pv_count, snap.live_count, snap.failed_count) == (50, 100, 0)
    got = dict(SnapshotValue.objects.filter(snapshot=snap).values_list("pv_name", "sp_num"))
    assert got == {f"E2E:{i}:SP": float(i) for i in range(50)}


def test_sigkilled_worker_job_is_retried_once(redis_client, workers, quiet_epics):
    # Values nobody serves, read directly: the capture waits for the per-PV timeout, long
    # enough to kill the worker in the middle of it.
    for i in range(20):
        PV.objects.create(setpoint_address=f"KILL:{i}:SP")
    env = worker_env(
        SQUIRREL_EPICS_TIMEOUT="4",
        EPICS_CA_SERVER_PORT=str(quiet_epics),
    )
    first = Worker(env).start()
    workers.append(first)
    job = services.snapshot_create_enqueue(
        title="killed", description=None, use_cache=False, created_by=None
    )
    job_id = str(job.pk)
    deadline = time.monotonic() + 20
    while Job.objects.get(pk=job_id).progress < 20:
        assert time.monotonic() < deadline, first.output()[-3000:]
        time.sleep(0.05)
    first.kill()
    started = time.monotonic()
    running = Job.objects.get(pk=job_id)
    assert running.status == Job.Status.RUNNING  # not failed: a retry follows
    assert Snapshot.objects.count() == 0
    # The broker hands the unacknowledged message out again once the visibility timeout
    # (10 s) has passed; a worker that starts after that picks it up at once.
    time.sleep(max(0.0, 11 - (time.monotonic() - started)))
    second = Worker(env).start()
    workers.append(second)
    done = wait_job(job_id, timeout=60)
    assert done.status == Job.Status.COMPLETED, (done.error, second.output()[-3000:])
    assert done.attempts == 2
    assert Snapshot.objects.count() == 1
    snap = Snapshot.objects.get()
    assert str(snap.pk) == done.result_id
    assert (snap.pv_count, snap.failed_count) == (20, 20)
    assert SnapshotValue.objects.filter(snapshot=snap).count() == 20


def test_sigkilled_worker_capture_is_failed_within_the_stale_bound_and_stays_failed(
    redis_client, workers, quiet_epics, settings, api
):
    # The poll below (this process) reaps with a short stale bound; the worker's direct reads
    # wait for an IOC nobody runs, keeping the capture in the middle of its reads.
    settings.JOB_HEARTBEAT_STALE = 3.0
    for i in range(20):
        PV.objects.create(setpoint_address=f"STALE:{i}:SP")
    env = worker_env(SQUIRREL_EPICS_TIMEOUT="30", EPICS_CA_SERVER_PORT=str(quiet_epics))
    first = Worker(env).start()
    workers.append(first)
    job = services.snapshot_create_enqueue(
        title="killed, reaped", description=None, use_cache=False, created_by=None
    )
    job_id = str(job.pk)
    deadline = time.monotonic() + 20
    while True:  # reading over CA, and its heartbeat has beaten since the start
        running = Job.objects.get(pk=job_id)
        if running.progress >= 20 and running.heartbeat_at > running.started_at:
            break
        assert time.monotonic() < deadline, (running.status, first.output()[-3000:])
        time.sleep(0.05)
    last_beat = running.heartbeat_at
    first.kill()
    killed = time.monotonic()

    # The poll a client makes (GET /v1/jobs/{id}) fails it once the heartbeat is stale.
    while True:
        polled = payload(api.get(f"/v1/jobs/{job_id}"))
        if polled["status"] != "running":
            break
        assert time.monotonic() - killed < 3.0 + 3.0, polled
        time.sleep(0.1)
    failed_after = time.monotonic() - killed
    assert polled["status"] == "failed", polled
    assert "worker stopped during the capture" in polled["error"], polled
    assert "no snapshot was saved" in polled["error"], polled
    assert Job.objects.get(pk=job_id).heartbeat_at == last_beat  # nothing beat after the kill
    assert Snapshot.objects.count() == 0 and SnapshotValue.objects.count() == 0

    # The unacknowledged message comes back after the visibility timeout (10 s): a new worker
    # takes it, finds the job failed, and neither captures nor reopens it.
    time.sleep(max(0.0, 11 - (time.monotonic() - killed)))
    second = Worker(env).start()
    workers.append(second)
    deadline = time.monotonic() + 20
    while "already finished; not running it again" not in second.output():
        assert time.monotonic() < deadline, second.output()[-3000:]
        time.sleep(0.1)
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (Job.Status.FAILED, 1)
    assert "no snapshot was saved" in job.error
    assert Snapshot.objects.count() == 0 and SnapshotValue.objects.count() == 0
    print(f"FIGURE: killed capture failed {failed_after:.2f} s after the SIGKILL (stale 3 s)")


def test_take_snapshot_command_follows_the_worker(redis_client, workers, monitor_heartbeat):
    PV.objects.create(setpoint_address="CLI:SP")
    redis_client.hset(
        events.values_hash(),
        "CLI:SP",
        values.pack({"value": 5.0, "connected": True, "updated_at": time.time()}),
    )
    workers.append(Worker(worker_env()).start())
    out = io.StringIO()
    call_command("take_snapshot", "--title", "cli e2e", "--timeout", "60", stdout=out)
    text = out.getvalue()
    snap = Snapshot.objects.get()
    assert "100%" in text and f"snapshot {snap.pk} 'cli e2e': 1 PVs (live 1" in text
    job = Job.objects.get()
    assert job.status == Job.Status.COMPLETED and job.result_id == str(snap.pk)

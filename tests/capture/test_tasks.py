"""snapshots.tasks: the retry policy and the job record around it (``.apply()``, in-process)."""

from __future__ import annotations

import socket
import time

import pytest

from jobs import services as jobs
from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots.models import Snapshot
from snapshots.tasks import MAX_RETRIES, snapshot_capture_task

pytestmark = pytest.mark.django_db


def _job(**data) -> Job:
    return jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data=data)


def test_task_completes_the_job(redis_client):
    PV.objects.create(setpoint_address="T:SP")
    redis_client.hset(
        events.values_hash(),
        "T:SP",
        values.pack({"value": 1.0, "connected": True, "updated_at": time.time()}),
    )
    job = _job(title="t", use_cache=True)
    result = snapshot_capture_task.apply(args=[str(job.pk)])
    job.refresh_from_db()
    assert result.successful() and result.result == job.result_id
    assert (job.status, job.progress, job.attempts) == ("completed", 100, 1)
    # A redelivery of a completed job does nothing.
    snapshot_capture_task.apply(args=[str(job.pk)])
    assert Snapshot.objects.count() == 1
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_redelivery_of_a_reaped_job_does_nothing(redis_client):
    PV.objects.create(setpoint_address="T:SP")
    job = _job(title="t", use_cache=True)
    jobs.job_start(job_id=job.pk)  # the first attempt's worker died mid-capture ...
    jobs.job_fail(job_id=job.pk, error="worker stopped")  # ... and the reaper failed its job
    result = snapshot_capture_task.apply(args=[str(job.pk)])  # the message comes back
    assert result.successful() and result.result is None
    job.refresh_from_db()
    assert (job.status, job.error, job.attempts) == ("failed", "worker stopped", 1)
    assert Snapshot.objects.count() == 0


def test_missing_job_is_skipped(db):
    result = snapshot_capture_task.apply(args=["6b1c3b52-3a54-4d3a-9c59-6f5a0d1d7a11"])
    assert result.successful() and result.result is None


def test_non_retryable_error_fails_at_once(db):
    job = _job(title="   ", use_cache=True)  # invalid title: no retry can help
    result = snapshot_capture_task.apply(args=[str(job.pk)])
    assert result.failed()
    job.refresh_from_db()
    assert (job.status, job.message, job.attempts) == ("failed", "Job failed", 1)
    assert job.error.startswith("Invalid: ")


def test_connection_errors_are_retried_then_fail(db, settings, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    PV.objects.create(setpoint_address="T:SP")
    job = _job(title="t", use_cache=True)
    result = snapshot_capture_task.apply(args=[str(job.pk)])
    assert result.failed()
    job.refresh_from_db()
    # Every attempt ran (the first plus MAX_RETRIES retries); only the last one failed the job.
    assert job.attempts == MAX_RETRIES + 1
    assert job.status == Job.Status.FAILED
    assert "ConnectionError" in job.error
    assert Snapshot.objects.count() == 0
    # The two earlier attempts left the job running ("will retry"), the last one failed it.
    retries = [r for r in caplog.records if "will retry" in r.getMessage()]
    failures = [r for r in caplog.records if r.getMessage().endswith(" failed")]
    assert (len(retries), len(failures)) == (MAX_RETRIES, 1)

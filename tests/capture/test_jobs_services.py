"""jobs.services: lifecycle, throttled progress, and the wrapper's failed-only-when-final rule."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.heartbeat import HEARTBEAT_INTERVAL
from jobs.models import Job
from squirrel.exceptions import NotFound

pytestmark = pytest.mark.django_db


def _job(**data) -> Job:
    return services.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data=data or None)


def test_create_is_pending_with_data():
    job = _job(title="T", use_cache=True)
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING
    assert job.progress == 0
    assert job.job_data == {"title": "T", "use_cache": True}
    assert job.started_at is None and job.completed_at is None


def test_get_missing_and_malformed_are_not_found():
    with pytest.raises(NotFound, match="Job nope not found"):
        services.job_get(job_id="nope")
    with pytest.raises(NotFound):
        services.job_get(job_id="6b1c3b52-3a54-4d3a-9c59-6f5a0d1d7a11")
    job = _job()
    assert services.job_get(job_id=str(job.pk)).pk == job.pk


def test_start_sets_running_and_started_at_only_once():
    job = _job()
    started = services.job_start(job_id=job.pk)
    assert started.status == Job.Status.RUNNING
    assert started.message == "Job started"
    assert started.attempts == 1
    first = started.started_at
    again = services.job_start(job_id=job.pk)
    assert again.started_at == first
    assert again.attempts == 2
    assert services.job_start(job_id="6b1c3b52-3a54-4d3a-9c59-6f5a0d1d7a11") is None


def test_progress_is_clamped_and_throttled():
    job = _job()
    services.job_start(job_id=job.pk)
    assert services.job_progress(job_id=job.pk, progress=150, message="big")
    job.refresh_from_db()
    assert (job.progress, job.message) == (100, "big")
    assert services.job_progress(job_id=job.pk, progress=-5, message="neg")
    job.refresh_from_db()
    assert job.progress == 0
    # One point within the interval: skipped; two points: written; forced: written.
    assert not services.job_progress(job_id=job.pk, progress=1, message="skip")
    job.refresh_from_db()
    assert job.message == "neg"
    assert services.job_progress(job_id=job.pk, progress=2, message="two")
    assert services.job_progress(job_id=job.pk, progress=2, message="forced", force=True)
    job.refresh_from_db()
    assert (job.progress, job.message) == (2, "forced")


def test_progress_never_touches_a_finished_job():
    job = _job()
    services.job_start(job_id=job.pk)
    services.job_complete(job_id=job.pk, result_id="r")
    assert not services.job_progress(job_id=job.pk, progress=50, message="late", force=True)
    job.refresh_from_db()
    assert job.status == Job.Status.COMPLETED and job.progress == 100


def test_complete_defaults_and_result():
    job = _job(title="T")
    services.job_start(job_id=job.pk)
    done = services.job_complete(job_id=job.pk, result_id="abc", result={"n": 1})
    assert done.status == Job.Status.COMPLETED
    assert done.progress == 100
    assert done.message == "Job completed successfully"
    assert done.result_id == "abc"
    assert done.completed_at is not None
    assert done.job_data == {"title": "T", "result": {"n": 1}}


def test_fail_records_error_but_never_undoes_completion():
    job = _job()
    services.job_start(job_id=job.pk)
    failed = services.job_fail(job_id=job.pk, error="ValueError: x")
    assert (failed.status, failed.message, failed.error) == (
        "failed",
        "Job failed",
        "ValueError: x",
    )
    assert failed.completed_at is not None
    other = _job()
    services.job_complete(job_id=other.pk, result_id="r")
    assert services.job_fail(job_id=other.pk, error="late").status == Job.Status.COMPLETED


def test_run_success_completes_with_outcome():
    job = _job()
    seen = []

    def work(*, job, progress):
        progress(50, "half")
        seen.append(Job.objects.get(pk=job.pk).status)
        return services.JobOutcome(result_id="res", message="done it")

    outcome = services.job_run(job_id=job.pk, work=work, will_retry=lambda exc: False)
    assert outcome.result_id == "res"
    job.refresh_from_db()
    assert seen == [Job.Status.RUNNING]
    assert (job.status, job.progress, job.message, job.result_id) == (
        "completed",
        100,
        "done it",
        "res",
    )


def test_run_failure_with_retry_keeps_running_then_final_failure_fails():
    job = _job()

    def boom(*, job, progress):
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        services.job_run(job_id=job.pk, work=boom, will_retry=lambda exc: True)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.error is None
    assert "Retrying after error: ConnectionError: redis went away" in job.message
    with pytest.raises(ConnectionError):
        services.job_run(job_id=job.pk, work=boom, will_retry=lambda exc: False)
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error == "ConnectionError: redis went away"
    assert job.attempts == 2


def test_run_skips_completed_and_missing_jobs():
    job = _job()
    services.job_complete(job_id=job.pk, result_id="first", message="m")
    calls = []

    def work(*, job, progress):
        calls.append(1)
        return services.JobOutcome()

    outcome = services.job_run(job_id=job.pk, work=work, will_retry=lambda exc: False)
    assert outcome.result_id == "first" and calls == []
    missing = "6b1c3b52-3a54-4d3a-9c59-6f5a0d1d7a11"
    assert services.job_run(job_id=missing, work=work, will_retry=lambda e: False) is None
    assert calls == []


def test_run_keeps_completion_done_inside_work():
    job = _job()

    def work(*, job, progress):
        services.job_complete(job_id=job.pk, result_id="inner", message="inner message")
        return services.JobOutcome(result_id="outer", message="outer message")

    services.job_run(job_id=job.pk, work=work, will_retry=lambda exc: False)
    job.refresh_from_db()
    assert (job.result_id, job.message) == ("inner", "inner message")


# --- heartbeats and the reaper: a dead worker's job is failed, and never run again ---------------


def _running(*, beat_age: float | None, type: str = Job.Type.SNAPSHOT_CREATE) -> Job:
    job = services.job_create(type=type, job_data=None)
    services.job_start(job_id=job.pk)
    beat = None if beat_age is None else timezone.now() - timedelta(seconds=beat_age)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=beat)
    return job


def test_start_sets_a_fresh_heartbeat_and_a_retry_clears_it():
    job = _job()
    before = timezone.now()
    started = services.job_start(job_id=job.pk)
    assert started.heartbeat_at is not None and started.heartbeat_at >= before
    services.job_note_retry(job_id=job.pk, error="ConnectionError: x")
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.heartbeat_at is None


def test_reap_stale_fails_only_running_jobs_of_its_type_with_a_stale_heartbeat():
    stale = _running(beat_age=30)
    fresh = _running(beat_age=1)
    waiting = _running(beat_age=None)  # between retries: held by no worker
    other = _running(beat_age=30, type=Job.Type.SNAPSHOT_RESTORE)
    pending = _job()
    done = _running(beat_age=30)
    services.job_complete(job_id=done.pk, result_id="r")

    reaped = services.job_reap_stale(
        type=Job.Type.SNAPSHOT_CREATE, error=lambda beat: f"dead since {beat:%H:%M}", stale_after=10
    )
    assert [j.pk for j in reaped] == [stale.pk]
    stale.refresh_from_db()
    assert (stale.status, stale.message) == (Job.Status.FAILED, "Job failed")
    assert stale.error.startswith("dead since ") and stale.completed_at is not None
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses[fresh.pk] == statuses[waiting.pk] == statuses[other.pk] == "running"
    assert (statuses[pending.pk], statuses[done.pk]) == ("pending", "completed")


def test_poll_fails_a_capture_whose_worker_died(settings):
    settings.JOB_HEARTBEAT_STALE = 5.0
    job = _running(beat_age=6)
    polled = services.job_get_current(job_id=str(job.pk))
    assert polled.status == Job.Status.FAILED
    assert "worker stopped during the capture" in polled.error
    assert "no snapshot was saved" in polled.error
    alive = _running(beat_age=1)
    assert services.job_get_current(job_id=str(alive.pk)).status == Job.Status.RUNNING


def test_a_failed_job_is_never_run_again_nor_its_error_replaced():
    job = _running(beat_age=30)
    services.job_reap_stale(type=job.type, error=lambda beat: "reaped", stale_after=10)
    calls = []

    def work(*, job, progress):
        calls.append(1)
        return services.JobOutcome(result_id="late")

    # A redelivered message: nothing runs, the job stays failed with the reaper's error.
    assert services.job_run(job_id=job.pk, work=work, will_retry=lambda exc: False) is None
    assert services.job_start(job_id=job.pk) is None
    services.job_fail(job_id=job.pk, error="a late error")
    job.refresh_from_db()
    assert calls == [] and (job.status, job.error, job.attempts) == ("failed", "reaped", 1)


def test_an_attempt_whose_job_was_failed_meanwhile_is_discarded():
    job = _job()

    def work(*, job, progress):
        services.job_fail(job_id=job.pk, error="reaped")  # as the reaper would, meanwhile
        return services.JobOutcome(result_id="late", message="late")

    assert services.job_run(job_id=job.pk, work=work, will_retry=lambda exc: False) is None
    job.refresh_from_db()
    assert (job.status, job.error, job.result_id) == ("failed", "reaped", None)

    def abandoned(*, job, progress):
        raise services.JobAbandoned("failed while it ran")

    other = _job()
    assert services.job_run(job_id=other.pk, work=abandoned, will_retry=lambda e: False) is None
    assert Job.objects.get(pk=other.pk).status == Job.Status.RUNNING  # nothing recorded over it


@pytest.mark.django_db(transaction=True)
def test_run_keeps_the_heartbeat_fresh_while_work_runs():
    job = _job()
    beats = []

    def work(*, job, progress):
        first = Job.objects.get(pk=job.pk).heartbeat_at
        time.sleep(HEARTBEAT_INTERVAL * 2.5)
        beats.extend([first, Job.objects.get(pk=job.pk).heartbeat_at])
        return services.JobOutcome()

    extra = []
    services.job_run(
        job_id=job.pk, work=work, will_retry=lambda e: False, beats=[lambda: extra.append(1)]
    )
    assert beats[1] > beats[0]  # beaten from the heartbeat thread while work slept
    assert len(extra) >= 2  # the work's own beats ride on the same thread

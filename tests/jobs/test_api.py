"""GET /v1/jobs/{id} (contract §2.6, §5): the exact JobDTO and 404s."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from tests.conftest import error, payload

pytestmark = pytest.mark.django_db

JOB_KEYS = {
    "id", "type", "status", "progress", "message", "resultId", "error", "jobData",
    "createdAt", "startedAt", "completedAt",
}  # fmt: skip


def test_pending_job_shape(api):
    job = Job.objects.create(
        type=Job.Type.SNAPSHOT_CREATE, job_data={"title": "T", "description": None}
    )
    got = payload(api.get(f"/v1/jobs/{job.pk}"))
    assert set(got) == JOB_KEYS
    assert got == {
        "id": str(job.pk),
        "type": "snapshot_create",
        "status": "pending",
        "progress": 0,
        "message": None,
        "resultId": None,
        "error": None,
        "jobData": {"title": "T", "description": None},
        "createdAt": job.created_at.isoformat(),
        "startedAt": None,
        "completedAt": None,
    }
    assert got["createdAt"].endswith("+00:00")


def test_completed_and_failed_jobs(api):
    started = timezone.now() - timedelta(seconds=3)
    done = Job.objects.create(
        type=Job.Type.SNAPSHOT_CREATE,
        status=Job.Status.COMPLETED,
        progress=100,
        message="Snapshot created with 250 PV values",
        result_id=str(uuid.uuid4()),
        started_at=started,
        completed_at=started + timedelta(seconds=2),
    )
    got = payload(api.get(f"/v1/jobs/{done.pk}"))
    assert (got["status"], got["progress"], got["resultId"]) == ("completed", 100, done.result_id)
    assert got["startedAt"] == started.isoformat()
    assert got["completedAt"] == (started + timedelta(seconds=2)).isoformat()
    failed = Job.objects.create(
        type=Job.Type.SNAPSHOT_RESTORE,
        status=Job.Status.FAILED,
        message="Job failed",
        error="ConnectionError: no IOC",
    )
    got = payload(api.get(f"/v1/jobs/{failed.pk}"))
    assert (got["type"], got["status"], got["error"]) == (
        "snapshot_restore",
        "failed",
        "ConnectionError: no IOC",
    )


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4()), "0"])
def test_unknown_or_malformed_id_is_404(api, bad):
    assert error(api.get(f"/v1/jobs/{bad}"), 404) == f"Job {bad} not found"


def test_jobs_need_read_scope(api, settings):
    job = Job.objects.create(type=Job.Type.SNAPSHOT_CREATE)
    settings.ANONYMOUS_ACCESS = "none"
    assert error(api.get(f"/v1/jobs/{job.pk}"), 401) == "Missing or deactivated API key"


def test_job_is_one_query(api, django_assert_num_queries):
    job = Job.objects.create(type=Job.Type.SNAPSHOT_CREATE)
    with django_assert_num_queries(1):
        payload(api.get(f"/v1/jobs/{job.pk}"))

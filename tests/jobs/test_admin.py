"""Job admin: read-only records with their progress (a superuser's session)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_job_admin_is_read_only_with_progress(staff):
    job = Job.objects.create(type=Job.Type.SNAPSHOT_CREATE, status=Job.Status.RUNNING, progress=40)
    html = staff.get("/admin/jobs/job/").content.decode()
    assert '<progress max="100" value="40"' in html
    response = staff.get(f"/admin/jobs/job/{job.pk}/change/")
    assert response.status_code == 200
    assert staff.get("/admin/jobs/job/add/").status_code == 403
    staff.post(f"/admin/jobs/job/{job.pk}/change/", {"status": "completed", "progress": 100})
    job.refresh_from_db()
    assert (job.status, job.progress) == ("running", 40)

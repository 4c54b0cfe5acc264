"""``manage.py take_snapshot``: in-process (--sync) and queued (--no-wait)."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots.models import Snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture
def cached(db, redis_client, monitor_heartbeat):
    PV.objects.create(setpoint_address="CMD:A:SP", readback_address="CMD:A:RBV")
    now = time.time()
    redis_client.hset(
        events.values_hash(),
        mapping={
            a: values.pack({"value": 3.0, "connected": True, "updated_at": now})
            for a in ("CMD:A:SP", "CMD:A:RBV")
        },
    )


def test_take_snapshot_sync_prints_progress_and_summary(cached):
    out = io.StringIO()
    call_command("take_snapshot", "--title", "cli", "--comment", "c", "--sync", stdout=out)
    text = out.getvalue()
    assert "100%" in text and "[" in text
    snap = Snapshot.objects.get()
    assert (snap.title, snap.description, snap.created_by) == ("cli", "c", "cli")
    assert f"snapshot {snap.pk} 'cli': 1 PVs (live 2, re-read 0, stale 0, failed 0)" in text


def test_take_snapshot_no_wait_queues_a_job(cached, django_capture_on_commit_callbacks):
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("take_snapshot", "--title", "q", "--no-cache", "--no-wait", stdout=out)
    job = Job.objects.get()
    assert f"job {job.pk} queued" in out.getvalue()
    assert job.job_data["use_cache"] is False and len(callbacks) == 1


def test_take_snapshot_rejects_a_bad_title(db):
    with pytest.raises(CommandError, match="title"):
        call_command("take_snapshot", "--title", "  ", "--sync")
    assert Snapshot.objects.count() == 0


def test_take_snapshot_times_out_without_a_worker(cached, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=False),
        pytest.raises(CommandError, match="still pending"),
    ):
        call_command("take_snapshot", "--title", "w", "--timeout", "0.3", stdout=io.StringIO())

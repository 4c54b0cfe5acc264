"""Snapshot schedules: the API, their beat entries, runs (skips) and retention (issue 17
items 3 and 4). Beat and worker processes are in test_beat_e2e.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from jobs.models import Job
from snapshots import schedules, services
from snapshots.models import GOLDEN, Restore, Snapshot, SnapshotSchedule
from squirrel.models import AuditEvent
from tags.models import Tag, TagGroup
from tests.conftest import error, payload
from tests.snapshots.factories import captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db

SCHEDULE_KEYS = {
    "id", "name", "intervalSeconds", "crontab", "titleTemplate", "tagFilters", "keepLast",
    "keepDays", "enabled", "createdBy", "createdDate", "lastModifiedDate", "lastRunAt",
    "lastJobId",
}  # fmt: skip


def _make(**fields) -> SnapshotSchedule:
    data = schedules.ScheduleData(name=fields.pop("name", "hourly"), **fields)
    if data.interval_seconds is None and data.crontab is None:
        data.interval_seconds = 3600
    return schedules.schedule_create(data=data, actor="cli:test", created_by="cli:test")


def test_create_read_list_edit_delete(write_client, read_client):
    group = TagGroup.objects.create(name="Area")
    tag = Tag.objects.create(name="LI20", group=group)
    body = {"name": "shift", "crontab": "0 7  * * *", "keepLast": 10,
            "tagFilters": [[str(tag.pk)]], "titleTemplate": "Shift %Y-%m-%d"}  # fmt: skip
    made = payload(write_client.post("/v1/snapshot-schedules", body, format="json"))
    assert set(made) == SCHEDULE_KEYS
    assert made["crontab"] == "0 7 * * *" and made["intervalSeconds"] is None
    assert made["tagFilters"] == [[str(tag.pk)]] and made["keepDays"] is None
    assert made["enabled"] is True and made["createdBy"] == "api-key:writer"
    task = PeriodicTask.objects.get(name=f"snapshot-schedule:{made['id']}")
    assert task.task == schedules.SCHEDULE_RUN_TASK and task.args == f'["{made["id"]}"]'
    assert (task.crontab.minute, task.crontab.hour, task.interval) == ("0", "7", None)
    url = f"/v1/snapshot-schedules/{made['id']}"
    assert payload(read_client.get(url)) == made
    assert payload(read_client.get("/v1/snapshot-schedules")) == [made]
    # PUT: absent keys unchanged; an interval replaces the crontab.
    edited = payload(
        write_client.put(url, {"intervalSeconds": 60, "enabled": False}, format="json")
    )
    assert (edited["intervalSeconds"], edited["crontab"], edited["keepLast"]) == (60, None, 10)
    task.refresh_from_db()
    assert (task.interval.every, task.crontab, task.enabled) == (60, None, False)
    assert task.expire_seconds == 60
    assert payload(write_client.put(url, {"keepLast": None}, format="json"))["keepLast"] is None
    assert payload(write_client.delete(url)) is True
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()
    assert error(read_client.get(url), 404)
    kinds = list(AuditEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["schedule.create", "schedule.update", "schedule.update", "schedule.delete"]
    update = AuditEvent.objects.filter(kind="schedule.update").order_by("id").first()
    assert update.before == {"intervalSeconds": None, "crontab": "0 7 * * *", "enabled": True}


def test_anonymous_schedule_is_created_by_nobody_and_audited_as_anonymous(settings):
    """As a snapshot's: an anonymous caller leaves ``createdBy`` null (squirrel.auth's rule);
    the audit still names the caller "anonymous"."""
    settings.ANONYMOUS_ACCESS = "write"
    made = payload(
        APIClient().post("/v1/snapshot-schedules", {"name": "anon", "intervalSeconds": 60},
                         format="json")
    )  # fmt: skip
    assert made["createdBy"] is None
    event = AuditEvent.objects.get(kind="schedule.create")
    assert event.actor == "anonymous"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"intervalSeconds": 5}, "name"),
        ({"name": "x"}, "exactly one"),
        ({"name": "x", "intervalSeconds": 5, "crontab": "* * * * *"}, "exactly one"),
        ({"name": "x", "intervalSeconds": 0}, "intervalSeconds"),
        ({"name": "x", "crontab": "61 * * * *"}, "crontab"),
        ({"name": "x", "crontab": "* * *"}, "five fields"),
        ({"name": "x", "intervalSeconds": 5, "titleTemplate": "{nope}"}, "placeholder"),
        ({"name": "x", "intervalSeconds": 5, "keepLast": 0}, "keepLast"),
        ({"name": "x", "intervalSeconds": 5, "tagFilters": [["bad"]]}, "tagFilters"),
        (
            {
                "name": "x",
                "intervalSeconds": 5,
                "tagFilters": [["7b0f5b52-0c3b-4f5e-9d7c-2f4b8d7f9a10"]],
            },
            "unknown tag",
        ),  # fmt: skip
    ],
)
def test_create_errors(write_client, body, words):
    assert words in error(write_client.post("/v1/snapshot-schedules", body, format="json"), 422)
    assert (
        not SnapshotSchedule.objects.exists()
        and not PeriodicTask.objects.filter(name__startswith="snapshot-schedule:").exists()
    )


def test_name_taken_missing_and_scopes(write_client, read_client):
    _make(name="dup")
    body = {"name": "dup", "intervalSeconds": 5}
    assert "exists" in error(write_client.post("/v1/snapshot-schedules", body, format="json"), 409)
    assert error(write_client.put("/v1/snapshot-schedules/nope", body, format="json"), 404)
    assert error(write_client.delete("/v1/snapshot-schedules/nope"), 404)
    assert error(read_client.post("/v1/snapshot-schedules", body, format="json"), 401)
    assert error(read_client.get("/v1/snapshot-schedules/nope/retention-preview"), 404)


def test_title_template_placeholders():
    at = datetime(2026, 12, 3, 7, 5, 9, tzinfo=UTC)
    assert schedules.title_render("{name} {date} {time}", name="s", at=at) == (
        "s 2026-12-03 07:05:09"
    )
    assert schedules.title_render("%H:%M {name} {datetime}", name="100%", at=at) == (
        "07:05 100% 2026-12-03T07:05:09+00:00"
    )


def test_run_queues_a_capture_job_and_skips_while_busy_or_too_soon(
    caplog, django_capture_on_commit_callbacks
):
    schedule = _make(interval_seconds=60, name="busy")
    now = timezone.now()
    with django_capture_on_commit_callbacks() as callbacks:
        job = schedules.schedule_run(schedule_id=str(schedule.pk), now=now)
    assert job is not None and len(callbacks) == 1
    assert job.job_data["schedule_id"] == str(schedule.pk)
    assert job.created_by == "schedule:busy"
    with caplog.at_level(logging.WARNING, logger="snapshots.schedules"):
        later = now + timedelta(seconds=120)
        assert schedules.schedule_run(schedule_id=str(schedule.pk), now=later) is None
    assert "its previous run" in caplog.text and "still pending" in caplog.text
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED)
    with caplog.at_level(logging.WARNING, logger="snapshots.schedules"):
        soon = now + timedelta(seconds=10)
        assert schedules.schedule_run(schedule_id=str(schedule.pk), now=soon) is None
    assert "(burst)" in caplog.text
    assert schedules.schedule_run(schedule_id=str(schedule.pk), now=later) is not None
    SnapshotSchedule.objects.filter(pk=schedule.pk).update(enabled=False)
    assert (
        schedules.schedule_run(schedule_id=str(schedule.pk), now=later + timedelta(days=1)) is None
    )
    assert schedules.schedule_run(schedule_id="6f1c0a52-7c3b-4f5e-9d7c-2f4b8d7f9a10") is None


def _runs(schedule: SnapshotSchedule, n: int, *, start: datetime) -> list[Snapshot]:
    """``n`` snapshots of ``schedule``, one a day back from ``start``, oldest first."""
    out = []
    for i in range(n):
        snap = snapshot_seed(f"run {i}", [captured(None, entry(float(i)), name="R:1")],
                             schedule=schedule)  # fmt: skip
        Snapshot.objects.filter(pk=snap.pk).update(created_at=start - timedelta(days=n - i))
        out.append(snap)
    return out


def test_retention_keeps_last_plus_protected_and_audits(write_client):
    schedule = _make(keep_last=3)
    runs = _runs(schedule, 8, start=timezone.now())
    services.snapshot_labels_set(snapshot_id=str(runs[0].pk), labels=[GOLDEN], actor="cli:t")
    Restore.objects.create(snapshot=runs[1])
    manual = snapshot_seed("by hand", [captured(None, entry(1.0), name="R:1")])
    preview = payload(write_client.get(f"/v1/snapshot-schedules/{schedule.pk}/retention-preview"))
    assert [p["title"] for p in preview] == ["run 4", "run 3", "run 2"]
    assert Snapshot.objects.count() == 9  # a preview deletes nothing
    assert schedules.retention_apply(schedule_id=str(schedule.pk), actor="system:retention") == 3
    left = set(Snapshot.objects.values_list("title", flat=True))
    assert left == {"run 0", "run 1", "run 5", "run 6", "run 7", "by hand"}
    events = AuditEvent.objects.filter(kind="snapshot.delete")
    assert events.count() == 3 and {e.actor for e in events} == {"system:retention"}
    assert events.first().detail["rule"] == "keepLast=3, keepDays=None"
    assert manual.pk in set(Snapshot.objects.values_list("pk", flat=True))
    assert schedules.retention_apply(schedule_id=str(schedule.pk), actor="system:retention") == 0


def test_retention_keep_days_and_both_rules():
    now = timezone.now()
    by_days = _make(name="days", keep_days=3)
    _runs(by_days, 6, start=now + timedelta(hours=1))  # ages 5..0 days (minus an hour)
    assert [s.title for s in schedules.retention_preview(schedule_id=str(by_days.pk))] == [
        "run 2", "run 1", "run 0"
    ]  # fmt: skip
    both = _make(name="both", keep_last=4, keep_days=1)
    _runs(both, 6, start=now + timedelta(hours=1))
    # Kept if either rule keeps it: the newest 4 (the day rule keeps only one).
    assert [s.title for s in schedules.retention_preview(schedule_id=str(both.pk))] == [
        "run 1", "run 0"
    ]  # fmt: skip
    neither = _make(name="neither")
    _runs(neither, 3, start=now)
    assert schedules.retention_preview(schedule_id=str(neither.pk)) == []
    assert schedules.retention_sweep() == 5
    assert Snapshot.objects.count() == 3 + 4 + 3  # days: 3 left, both: 4, neither: 3


def test_schedule_admin_creates_through_the_service():
    user = get_user_model().objects.create_superuser("adm", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/admin/snapshots/snapshotschedule/add/",
        {
            "name": "from admin",
            "enabled": "on",
            "interval_seconds": "30",
            "title_template": "{name} {time}",
        },  # fmt: skip
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    schedule = SnapshotSchedule.objects.get(name="from admin")
    assert schedule.periodic_task is not None and schedule.periodic_task.interval.every == 30
    assert AuditEvent.objects.get(kind="schedule.create").actor == "user:adm"
    response = client.post(f"/admin/snapshots/snapshotschedule/{schedule.pk}/delete/",
                           {"post": "yes"})  # fmt: skip
    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(name__startswith="snapshot-schedule:").exists()


def test_schedule_admin_shows_the_service_rules_as_form_errors():
    user = get_user_model().objects.create_superuser("adm", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    response = client.post(
        "/admin/snapshots/snapshotschedule/add/",
        {
            "name": "both",
            "enabled": "on",
            "interval_seconds": "30",
            "crontab": "* * * * *",
            "title_template": "{name}",
        },  # fmt: skip
    )
    assert response.status_code == 200
    assert "exactly one of intervalSeconds and crontab" in response.content.decode()
    assert not SnapshotSchedule.objects.exists()

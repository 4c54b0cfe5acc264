"""Scheduled snapshots and their retention (issue 17).

1. A ``SnapshotSchedule`` row is the source of truth; its beat entry (django-celery-beat's
   ``PeriodicTask``, read by ``celery -A squirrel beat`` through the database scheduler set in
   settings) is written beside it, in the same transaction, by every service here.
2. Beat sends ``schedule_run_task(schedule_id)``; ``schedule_run`` turns it into an ordinary
   capture job whose snapshot carries the schedule. It skips (and logs) a run while the
   schedule's previous job is still pending or running, and one that comes sooner than half
   the interval after the last (a burst: queued messages delivered at once after an outage).
   Beat itself never replays missed runs (one run when due, then the next from now), and each
   message expires after one interval, so runs missed while beat or the workers were down are
   not replayed as a burst.
3. Retention keeps, of a schedule's unprotected snapshots, the newest ``keep_last`` and those
   younger than ``keep_days`` (a snapshot either rule keeps is kept; neither rule set keeps
   everything); it never touches a protected snapshot (``services.snapshots_delete`` decides
   that again under the row locks). It runs right after each run of the schedule and in the
   periodic sweep; each deletion is recorded in the audit.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab as celery_crontab
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from jobs.models import Job
from snapshots import services
from snapshots.models import Snapshot, SnapshotSchedule
from snapshots.restore.selection import selection_parse
from squirrel import audit
from squirrel.exceptions import Conflict, Invalid, NotFound
from squirrel.http import invalid
from tags.models import Tag

log = logging.getLogger(__name__)

SCHEDULE_RUN_TASK = "snapshots.tasks.schedule_run_task"
RETENTION_CHUNK = 100
CRON_EXPIRES = 60  # seconds a crontab run's message stays valid
UTC = ZoneInfo("UTC")


@dataclass
class ScheduleData:
    """A schedule's editable fields (API and admin)."""

    name: str
    interval_seconds: int | None = None
    crontab: str | None = None
    title_template: str = "{name} {date} {time}"
    tag_filters: list[list[str]] | None = None
    keep_last: int | None = None
    keep_days: int | None = None
    enabled: bool = True

    @classmethod
    def of(cls, schedule: SnapshotSchedule) -> ScheduleData:
        return cls(
            name=schedule.name,
            interval_seconds=schedule.interval_seconds,
            crontab=schedule.crontab or None,
            title_template=schedule.title_template,
            tag_filters=schedule.tag_filters,
            keep_last=schedule.keep_last,
            keep_days=schedule.keep_days,
            enabled=schedule.enabled,
        )


def title_render(template: str, *, name: str, at: datetime) -> str:
    """The title of a run: strftime codes (``%Y``...), then ``{name}``, ``{date}``
    (YYYY-MM-DD), ``{time}`` (HH:MM:SS), ``{datetime}`` (ISO 8601), all in UTC."""
    at = at.astimezone(UTC)
    text = at.strftime(template).format_map(
        {
            "name": name,
            "date": at.strftime("%Y-%m-%d"),
            "time": at.strftime("%H:%M:%S"),
            "datetime": at.isoformat(timespec="seconds"),
        }
    )
    return text.strip()[:255] or name


def _crontab_fields(text: str) -> tuple[str, str, str, str, str]:
    parts = text.split()
    if len(parts) != 5:
        raise ValueError("expected five fields: minute hour day-of-month month day-of-week")
    minute, hour, dom, month, dow = parts
    celery_crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month,
                   day_of_week=dow)  # fmt: skip
    return minute, hour, dom, month, dow


def _fail(key: str, msg: str) -> Invalid:
    return invalid(["body", key], msg, "value_error", message=f"Validation error: {key}: {msg}")


def schedule_clean(data: ScheduleData) -> ScheduleData:
    """Check the rules of a schedule (422 naming the field): a name, exactly one of
    ``intervalSeconds`` and ``crontab``, a valid crontab and title template, tag filters of
    existing tags, positive retention numbers."""
    data.name = (data.name or "").strip()
    if not data.name or len(data.name) > 200:
        raise _fail("name", "1 to 200 characters")
    if (data.interval_seconds is None) == (not data.crontab):
        raise _fail("intervalSeconds", "give exactly one of intervalSeconds and crontab")
    if data.interval_seconds is not None and data.interval_seconds < 1:
        raise _fail("intervalSeconds", "at least 1")
    if data.crontab:
        data.crontab = " ".join(data.crontab.split())
        try:
            _crontab_fields(data.crontab)
        except ValueError as exc:
            raise _fail("crontab", str(exc)) from None
    else:
        data.crontab = None
    try:
        title_render(data.title_template, name=data.name, at=timezone.now())
    except (KeyError, ValueError, IndexError) as exc:
        raise _fail("titleTemplate", f"unknown placeholder or bad format: {exc}") from None
    if not data.title_template.strip() or len(data.title_template) > 255:
        raise _fail("titleTemplate", "1 to 255 characters")
    for key, value in (("keepLast", data.keep_last), ("keepDays", data.keep_days)):
        if value is not None and value < 1:
            raise _fail(key, "at least 1 (null: no such rule)")
    if data.tag_filters is not None:
        selection = selection_parse(tag_filters=data.tag_filters)
        groups = [sorted(str(t) for t in g) for g in selection.tag_filters]
        wanted = {t for g in groups for t in g}
        known = {str(t) for t in Tag.objects.filter(pk__in=wanted).values_list("pk", flat=True)}
        if wanted - known:
            raise _fail("tagFilters", f"unknown tag {sorted(wanted - known)[0]}")
        data.tag_filters = groups or None
    return data


def _beat_sync(schedule: SnapshotSchedule) -> None:
    """Write the schedule's beat entry (its PeriodicTask) to match the row."""
    task = schedule.periodic_task or PeriodicTask(name=f"snapshot-schedule:{schedule.pk}")
    if schedule.interval_seconds is not None:
        task.interval, _ = IntervalSchedule.objects.get_or_create(
            every=schedule.interval_seconds, period=IntervalSchedule.SECONDS
        )
        task.crontab = None
        task.expire_seconds = schedule.interval_seconds
    else:
        assert schedule.crontab
        minute, hour, dom, month, dow = _crontab_fields(schedule.crontab)
        task.crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow,
            timezone=UTC,
        )  # fmt: skip
        task.interval = None
        task.expire_seconds = CRON_EXPIRES
    task.task = SCHEDULE_RUN_TASK
    task.args = json.dumps([str(schedule.pk)])
    task.enabled = schedule.enabled
    task.description = f"Snapshot schedule '{schedule.name}' (edit it as a snapshot schedule)"
    task.save()
    if schedule.periodic_task_id != task.pk:
        schedule.periodic_task = task
        schedule.save(update_fields=["periodic_task"])


def schedule_wire(schedule: SnapshotSchedule) -> dict[str, Any]:
    """A schedule's editable fields in their wire names: what the audit records before and
    after, and the body of its DTO (``schedule_serializers.schedule_dto``)."""
    return {
        "name": schedule.name,
        "intervalSeconds": schedule.interval_seconds,
        "crontab": schedule.crontab,
        "titleTemplate": schedule.title_template,
        "tagFilters": schedule.tag_filters,
        "keepLast": schedule.keep_last,
        "keepDays": schedule.keep_days,
        "enabled": schedule.enabled,
    }


_FIELDS = ("name", "interval_seconds", "crontab", "title_template", "tag_filters",
           "keep_last", "keep_days", "enabled")  # fmt: skip


def schedule_create(*, data: ScheduleData, actor: str, created_by: str | None) -> SnapshotSchedule:
    """Create a schedule and its beat entry; Invalid (422), Conflict (409) on a taken name.
    ``actor`` is the audit's name for the caller ("anonymous" included); ``created_by`` what
    the schedule shows: ``squirrel.auth.created_by``'s rule for an API caller (null when
    anonymous, as a snapshot's), the actor for the admin and commands."""
    data = schedule_clean(data)
    with transaction.atomic():
        if SnapshotSchedule.objects.filter(name=data.name).exists():
            raise Conflict(f"A schedule named '{data.name}' exists")
        schedule = SnapshotSchedule(
            created_by=created_by,
            **{f: getattr(data, f) for f in _FIELDS},
        )
        schedule.full_clean()
        schedule.save()
        _beat_sync(schedule)
        audit.record(actor, "schedule.create", schedule, summary=f"schedule '{schedule.name}'",
                     after=schedule_wire(schedule))  # fmt: skip
    return schedule


def schedule_get(*, schedule_id: str) -> SnapshotSchedule:
    try:
        return SnapshotSchedule.objects.get(pk=uuid.UUID(str(schedule_id)))
    except (SnapshotSchedule.DoesNotExist, ValueError):
        raise NotFound(f"Schedule {schedule_id} not found") from None


def _locked(schedule_id: str) -> SnapshotSchedule:
    try:
        return SnapshotSchedule.objects.select_for_update().get(pk=uuid.UUID(str(schedule_id)))
    except (SnapshotSchedule.DoesNotExist, ValueError):
        raise NotFound(f"Schedule {schedule_id} not found") from None


def schedule_update(*, schedule_id: str, data: ScheduleData, actor: str) -> SnapshotSchedule:
    """Replace a schedule's fields and its beat entry; NotFound, Invalid, Conflict."""
    data = schedule_clean(data)
    with transaction.atomic():
        schedule = _locked(schedule_id)
        taken = SnapshotSchedule.objects.filter(name=data.name).exclude(pk=schedule.pk)
        if taken.exists():
            raise Conflict(f"A schedule named '{data.name}' exists")
        old = schedule_wire(schedule)
        for f in _FIELDS:
            setattr(schedule, f, getattr(data, f))
        schedule.full_clean()
        schedule.save()
        _beat_sync(schedule)
        before, after = audit.changes(old, schedule_wire(schedule))
        if after:
            summary = f"schedule '{schedule.name}'"
            audit.record(
                actor, "schedule.update", schedule, summary=summary, before=before, after=after
            )
    return schedule


def schedule_delete(*, schedule_id: str, actor: str) -> None:
    """Delete a schedule and its beat entry; its snapshots stay (``scheduleId`` null)."""
    with transaction.atomic():
        schedule = _locked(schedule_id)
        audit.record(actor, "schedule.delete", schedule, summary=f"schedule '{schedule.name}'",
                     before=schedule_wire(schedule))  # fmt: skip
        task_id = schedule.periodic_task_id
        schedule.delete()
        if task_id is not None:
            PeriodicTask.objects.filter(pk=task_id).delete()


def schedule_run(*, schedule_id: str, now: datetime | None = None) -> Job | None:
    """One run of a schedule (beat's task): queue its capture job, or skip (module docstring,
    step 2) and return None."""
    now = now or timezone.now()
    with transaction.atomic():
        schedule = SnapshotSchedule.objects.select_for_update().filter(pk=schedule_id).first()
        if schedule is None or not schedule.enabled:
            log.info("schedule %s: gone or disabled, no run", schedule_id)
            return None
        busy = (
            Job.objects.filter(
                pk=schedule.last_job_id,
                status__in=(Job.Status.PENDING, Job.Status.RUNNING),
                created_at__gte=now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT),
            ).first()
            if schedule.last_job_id
            else None
        )
        if busy is not None:
            log.warning("schedule '%s': run skipped, its previous run (job %s) is still %s",
                        schedule.name, busy.pk, busy.status)  # fmt: skip
            return None
        gap = (schedule.interval_seconds or 2 * CRON_EXPIRES) / 2
        if schedule.last_run_at and (now - schedule.last_run_at).total_seconds() < gap:
            log.warning("schedule '%s': run skipped, the last began %.1f s ago (burst)",
                        schedule.name, (now - schedule.last_run_at).total_seconds())  # fmt: skip
            return None
        selection = None
        if schedule.tag_filters:
            selection = selection_parse(tag_filters=schedule.tag_filters).to_json()
        job = services.snapshot_create_enqueue(
            title=title_render(schedule.title_template, name=schedule.name, at=now),
            description=f"Taken by schedule '{schedule.name}'",
            use_cache=True,
            created_by=f"schedule:{schedule.name}",
            selection=selection,
            schedule_id=str(schedule.pk),
        )
        schedule.last_run_at = now
        schedule.last_job = job
        schedule.save(update_fields=["last_run_at", "last_job"])
    return job


# --- retention ---------------------------------------------------------------------------------


def retention_candidates(*, schedule: SnapshotSchedule, now: datetime | None = None) -> list[Any]:
    """Ids of the snapshots the schedule's retention would delete now, newest first."""
    if schedule.keep_last is None and schedule.keep_days is None:
        return []
    now = now or timezone.now()
    rows = list(
        Snapshot.objects.filter(schedule=schedule)
        .unprotected()
        .newest_first()
        .values_list("pk", "created_at")
    )
    if schedule.keep_last is not None:
        rows = rows[schedule.keep_last :]
    if schedule.keep_days is not None:
        cutoff = now - timedelta(days=schedule.keep_days)
        rows = [(pk, at) for pk, at in rows if at < cutoff]
    return [pk for pk, _ in rows]


def retention_preview(*, schedule_id: str) -> list[Snapshot]:
    """The snapshots the next sweep would delete (GET .../retention-preview)."""
    schedule = schedule_get(schedule_id=schedule_id)
    ids = retention_candidates(schedule=schedule)
    return list(Snapshot.objects.filter(pk__in=ids).newest_first())


def retention_apply(*, schedule_id: str, actor: str) -> int:
    """Delete what the schedule's retention does not keep, a chunk per transaction; how many
    were deleted."""
    schedule = SnapshotSchedule.objects.filter(pk=schedule_id).first()
    if schedule is None:
        return 0
    ids = retention_candidates(schedule=schedule)
    rule = f"keepLast={schedule.keep_last}, keepDays={schedule.keep_days}"
    detail = {"scheduleId": str(schedule.pk), "schedule": schedule.name, "rule": rule}
    deleted = 0
    for start in range(0, len(ids), RETENTION_CHUNK):
        done = services.snapshots_delete(
            snapshot_ids=ids[start : start + RETENTION_CHUNK], actor=actor, detail=detail
        )
        deleted += len(done.deleted)
        for pk, reason in done.protected:  # protected between the plan and the lock
            log.info("retention of '%s' kept %s: %s", schedule.name, pk, reason)
    if deleted:
        log.info("retention of '%s' (%s) deleted %d snapshot(s)", schedule.name, rule, deleted)
    return deleted


def retention_sweep(*, actor: str | None = None) -> int:
    """Apply every schedule's retention (the periodic sweep); how many were deleted."""
    actor = actor or audit.system("retention")
    schedules = SnapshotSchedule.objects.exclude(keep_last__isnull=True, keep_days__isnull=True)
    return sum(
        retention_apply(schedule_id=str(pk), actor=actor)
        for pk in schedules.values_list("pk", flat=True)
    )

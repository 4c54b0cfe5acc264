"""Snapshot services besides the capture itself (capture.py) and the export (export.py): the
rules of a snapshot's title and text, queueing a capture job, and the snapshot row's reads and
edits for the API.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import current_app
from django.db import transaction

from jobs import services as jobs
from jobs.models import Job
from snapshots.models import Snapshot
from squirrel.exceptions import NotFound
from squirrel.http import invalid

log = logging.getLogger(__name__)

# The capture task's name (snapshots.tasks), enqueued by name: this module does not import the
# tasks. The name predates it: the default Celery gave the task, which queued messages carry.
SNAPSHOT_CAPTURE_TASK = "snapshots.tasks.snapshot_capture_task"


def text_without_nul(key: str, value: Any) -> Any:
    """``value``, unless it is a string holding NUL, which PostgreSQL cannot store (422)."""
    if isinstance(value, str) and "\x00" in value:
        msg = "Null characters are not allowed."
        raise invalid(["body", key], msg, "null_characters_not_allowed")
    return value


def snapshot_title_clean(title: Any) -> str:
    """The title, 1..255 characters after trimming, else Invalid (422)."""
    if not isinstance(title, str) or not title.strip():
        raise invalid(
            ["body", "title"],
            "Field required",
            "missing",
            message="Validation error: title: field required",
        )
    title = text_without_nul("title", title.strip())
    if len(title) > 255:
        raise invalid(
            ["body", "title"],
            "At most 255 characters",
            "too_long",
            message="Validation error: title: at most 255 characters",
        )
    return title


def snapshot_create_queued_message(*, title: str, use_cache: bool) -> str:
    """JobCreatedDTO message (contract §2.4)."""
    suffix = "(from cache)" if use_cache else "(direct EPICS)"
    return f"Snapshot creation queued for '{title}' {suffix}"


def snapshot_create_enqueue(
    *, title: object, description: str | None, use_cache: bool, created_by: str | None
) -> Job:
    """Create a ``snapshot_create`` job and enqueue its task once the job row is committed."""
    title = snapshot_title_clean(title)
    with transaction.atomic():
        job = jobs.job_create(
            type=Job.Type.SNAPSHOT_CREATE,
            job_data={
                "title": title,
                "description": description,
                "comment": description,
                "use_cache": use_cache,
            },
            created_by=created_by,
        )
        job_id = str(job.pk)
        transaction.on_commit(
            lambda: _enqueue(current_app.signature(SNAPSHOT_CAPTURE_TASK), job_id)
        )
    return job


def _enqueue(task: Any, job_id: str) -> None:
    """Send the job's task (anything with ``delay``: a signature); if the broker cannot take
    it, the job fails saying why (the request that created it still answers with the job,
    never a 500)."""
    try:
        task.delay(job_id)
    except Exception as exc:  # the broker is a process boundary: any failure means "not queued"
        log.exception("could not queue job %s", job_id)
        jobs.job_fail(job_id=job_id, error=f"Could not queue the job: {jobs.error_text(exc)}")


def snapshot_get(*, snapshot_id: str) -> Snapshot:
    """The snapshot, or NotFound in the contract's words (a malformed id is not found too)."""
    try:
        return Snapshot.objects.get(pk=uuid.UUID(str(snapshot_id)))
    except (Snapshot.DoesNotExist, ValueError):
        raise NotFound(f"Snapshot {snapshot_id} not found") from None


def snapshot_update(
    *, snapshot_id: str, title: str | None = None, description: str | None = None
) -> Snapshot:
    """Change the title and/or description (None leaves a field unchanged); NotFound (404)."""
    with transaction.atomic():
        snapshot = _snapshot_locked(snapshot_id)
        if title is not None:
            snapshot.title = title
        if description is not None:
            snapshot.description = description
        snapshot.full_clean()
        snapshot.save(update_fields=["title", "description", "updated_at"])
    return snapshot


def snapshot_delete(*, snapshot_id: str) -> None:
    """Delete a snapshot and its values (one DELETE of the value rows); NotFound (404)."""
    with transaction.atomic():
        _snapshot_locked(snapshot_id).delete()


def _snapshot_locked(snapshot_id: str) -> Snapshot:
    try:
        return Snapshot.objects.select_for_update().get(pk=uuid.UUID(str(snapshot_id)))
    except (Snapshot.DoesNotExist, ValueError):
        raise NotFound(f"Snapshot {snapshot_id} not found") from None

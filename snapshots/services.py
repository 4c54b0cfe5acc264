"""Snapshot services besides the capture itself (capture.py) and the export (export.py): the
rules of a snapshot's title and text, queueing a capture job, the snapshot row's reads and
edits for the API, its labels, and deletion (which never touches a protected snapshot).

Protected (issue 17): a snapshot labelled ``golden``, or referenced by a restore as its source
or its safety snapshot. ``snapshots_delete`` locks the rows first and re-checks protection
under the lock: a restore that references a snapshot takes a key-share lock on its row for
its foreign key, so it waits for (and then fails on) a deletion that already holds it, and a
deletion waits for a restore being created.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Q

from jobs import services as jobs
from jobs.models import Job
from snapshots import storage
from snapshots.models import GOLDEN, Restore, Snapshot
from squirrel import audit
from squirrel.exceptions import Conflict, NotFound
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
    *,
    title: object,
    description: str | None,
    use_cache: bool,
    created_by: str | None,
    selection: dict[str, Any] | None = None,
    schedule_id: str | None = None,
) -> Job:
    """Create a ``snapshot_create`` job and enqueue its task once the job row is committed.
    ``selection`` (``Selection.to_json()``) captures a subset; ``schedule_id`` marks a
    scheduled run. Call it inside the caller's transaction to commit the job with it."""
    title = snapshot_title_clean(title)
    data: dict[str, Any] = {
        "title": title,
        "description": description,
        "comment": description,
        "use_cache": use_cache,
    }
    if selection is not None:
        data["selection"] = selection
    if schedule_id is not None:
        data["schedule_id"] = schedule_id
    with transaction.atomic():
        job = jobs.job_create(type=Job.Type.SNAPSHOT_CREATE, job_data=data, created_by=created_by)
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


def snapshots_metadata(
    *, snapshots: Sequence[Snapshot], addresses: Sequence[str]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Each snapshot's value of each address: its stored meta-PV value, else the value saved
    for that address (setpoint or readback) in the snapshot, else null."""
    missing = [a for a in addresses if any(a not in s.metadata for s in snapshots)]
    saved = storage.snapshot_values_at(
        snapshot_ids=[s.pk for s in snapshots if any(a not in s.metadata for a in missing)],
        addresses=missing,
    )
    return {
        s.pk: {
            a: s.metadata[a] if a in s.metadata else saved.get((str(s.pk), a)) for a in addresses
        }
        for s in snapshots
    }


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


def snapshot_delete(*, snapshot_id: str, actor: str) -> None:
    """Delete a snapshot and its values; NotFound (404), Conflict (409) when protected."""
    snapshot = snapshot_get(snapshot_id=snapshot_id)
    deleted = snapshots_delete(snapshot_ids=[snapshot.pk], actor=actor)
    if deleted.protected:
        raise Conflict(deleted.protected[0][1])
    if not deleted.deleted:
        raise NotFound(f"Snapshot {snapshot_id} not found")


@dataclass
class Deleted:
    """What ``snapshots_delete`` did: the ids deleted, and (id, reason) of those it kept."""

    deleted: list[uuid.UUID]
    protected: list[tuple[uuid.UUID, str]]


def protection_reason(snapshot: Snapshot, restore: Restore | None) -> str:
    """Why a snapshot may not be deleted (the 409's message, the admin's, retention's log)."""
    if GOLDEN in snapshot.labels:
        return f"Snapshot {snapshot.pk} is labelled '{GOLDEN}': golden snapshots are never deleted"
    assert restore is not None
    role = "safety snapshot" if restore.safety_snapshot_id == snapshot.pk else "source"
    return (
        f"Snapshot {snapshot.pk} is the {role} of restore {restore.pk}: snapshots referenced "
        "by a restore are never deleted"
    )


def snapshots_delete(
    *, snapshot_ids: Sequence[uuid.UUID], actor: str, detail: dict[str, Any] | None = None
) -> Deleted:
    """Delete the unprotected ones of these snapshots with their values, in ONE transaction,
    each deletion recorded in the audit; protected ones are kept and reported.

    The rows are locked first (``FOR UPDATE``) and protection is decided under that lock
    (module docstring). The values go in one ``DELETE ... WHERE snapshot_id IN (...)`` (the
    collector's fast path: ``snapshot_value`` has nothing that refers to it), which a capture
    writing other rows never waits for.
    """
    with transaction.atomic():
        rows = list(
            Snapshot.objects.select_for_update(of=("self",))
            .filter(pk__in=list(snapshot_ids))
            .order_by("pk")
        )
        if not rows:
            return Deleted([], [])
        references: dict[uuid.UUID, Restore] = {}
        ids = [s.pk for s in rows]
        referencing = Restore.objects.filter(
            Q(snapshot_id__in=ids) | Q(safety_snapshot_id__in=ids)
        ).order_by("-created_at")
        for restore in referencing:
            for ref in (restore.snapshot_id, restore.safety_snapshot_id):
                if ref is not None:
                    references.setdefault(ref, restore)
        keep = [
            (s.pk, protection_reason(s, references.get(s.pk)))
            for s in rows
            if GOLDEN in s.labels or s.pk in references
        ]
        kept = {pk for pk, _ in keep}
        gone = [s for s in rows if s.pk not in kept]
        if gone:
            audit.record_many(
                audit.event(
                    actor,
                    "snapshot.delete",
                    ("snapshot", s.pk),
                    summary=f"deleted snapshot '{s.title}' ({s.pv_count} values)",
                    before={"title": s.title, "labels": s.labels, "pvCount": s.pv_count},
                    detail=detail,
                )
                for s in gone
            )
            Snapshot.objects.filter(pk__in=[s.pk for s in gone]).delete()
    return Deleted([s.pk for s in gone], keep)


LABEL_MAX = 64
LABELS_MAX = 50


def labels_clean(raw: Any, loc: str = "labels") -> list[str]:
    """A list of distinct labels (trimmed, 1..64 characters, no commas), first spelling
    kept, in the given order; else Invalid (422)."""
    if not isinstance(raw, list):
        raise invalid(
            ["body", loc],
            "Must be a list of strings",
            "list_type",
            message=f"Validation error: {loc}: must be a list of strings",
        )
    out: list[str] = []
    for index, item in enumerate(raw):
        label = item.strip() if isinstance(item, str) else None
        problem = None
        if not label:
            problem = "must be a non-empty string"
        elif len(label) > LABEL_MAX:
            problem = f"at most {LABEL_MAX} characters"
        elif "," in label or "\x00" in label:
            problem = "may not hold a comma"
        if problem is not None:
            raise invalid(
                ["body", loc, index],
                problem,
                "value_error",
                message=f"Validation error: {loc}.{index}: {problem}",
            )
        assert label is not None
        if label not in out:
            out.append(label)
    if len(out) > LABELS_MAX:
        raise invalid(
            ["body", loc],
            f"At most {LABELS_MAX} labels",
            "too_long",
            message=f"Validation error: {loc}: at most {LABELS_MAX} labels",
        )
    return out


def snapshot_labels_set(*, snapshot_id: str, labels: Any, actor: str) -> Snapshot:
    """Replace a snapshot's labels (``golden`` protects it); NotFound (404), Invalid (422)."""
    clean = labels_clean(labels)
    with transaction.atomic():
        snapshot = _snapshot_locked(snapshot_id)
        before = list(snapshot.labels)
        if before != clean:
            snapshot.labels = clean
            snapshot.save(update_fields=["labels", "updated_at"])
            audit.record(
                actor,
                "snapshot.label",
                snapshot,
                summary=f"labels of '{snapshot.title}': {', '.join(clean) or '(none)'}",
                before={"labels": before},
                after={"labels": clean},
            )
    return snapshot


def snapshots_label(
    *, snapshot_ids: Iterable[uuid.UUID], add: Sequence[str], remove: Sequence[str], actor: str
) -> int:
    """Add and/or remove labels on many snapshots (the admin's bulk labelling); how many
    changed. Each change is recorded in the audit."""
    add = labels_clean(list(add), "add")
    remove = labels_clean(list(remove), "remove")
    changed = []
    with transaction.atomic():
        for snapshot in Snapshot.objects.select_for_update().filter(pk__in=list(snapshot_ids)):
            before = list(snapshot.labels)
            after = [x for x in before if x not in remove] + [
                x for x in add if x not in before and x not in remove
            ]
            if after != before:
                snapshot.labels = after
                changed.append(snapshot)
                audit.record(
                    actor,
                    "snapshot.label",
                    snapshot,
                    summary=f"labels of '{snapshot.title}': {', '.join(after) or '(none)'}",
                    before={"labels": before},
                    after={"labels": after},
                )
        Snapshot.objects.bulk_update(changed, ["labels"])
    return len(changed)


def _snapshot_locked(snapshot_id: str) -> Snapshot:
    try:
        return Snapshot.objects.select_for_update().get(pk=uuid.UUID(str(snapshot_id)))
    except (Snapshot.DoesNotExist, ValueError):
        raise NotFound(f"Snapshot {snapshot_id} not found") from None

"""The audit trail: one function records every write, with one identity rule.

Every change to the catalog, tags, snapshots, schedules, restore plans, approvals, restores and
reverts calls ``record`` **inside the transaction that makes the change**, so an event exists
exactly when its change does (a rolled-back write leaves no event, a committed one always has
one). The actor is named by ``actor_of`` (an HTTP request: the same name ``created_by`` gives,
``anonymous`` for a caller without credentials), ``cli`` (a management command) or ``system``
(a process acting on its own: a schedule's run, the retention sweep).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import models

from squirrel.auth import ANONYMOUS, created_by
from squirrel.models import AuditEvent

SUMMARY_MAX = 500


def actor_of(request: Any) -> str:
    """The audit name of an HTTP request's caller (``squirrel.auth.created_by``'s rule)."""
    return created_by(request) or ANONYMOUS


def cli(user: str | None = None) -> str:
    """The audit name of a management command's operator: ``cli:<login>``."""
    if user is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name in a container without a passwd entry
            user = "unknown"
    return f"cli:{user}"


def system(process: str) -> str:
    """The audit name of a process acting on its own (``system:retention``)."""
    return f"system:{process}"


def _object(obj: models.Model | tuple[str, Any] | None) -> tuple[str, str]:
    if obj is None:
        return "", ""
    if isinstance(obj, tuple):
        return obj[0], str(obj[1])
    return obj._meta.model_name or "", str(obj.pk)


def event(
    actor: str,
    kind: str,
    obj: models.Model | tuple[str, Any] | None = None,
    *,
    summary: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """An unsaved event (for ``record_many``); ``obj`` is a model instance or ``(type, id)``."""
    object_type, object_id = _object(obj)
    return AuditEvent(
        actor=actor[:255],
        kind=kind,
        object_type=object_type,
        object_id=object_id,
        summary=summary[:SUMMARY_MAX],
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
        detail=dict(detail or {}),
    )


def record(
    actor: str,
    kind: str,
    obj: models.Model | tuple[str, Any] | None = None,
    *,
    summary: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Record one write (call inside the transaction that makes it; module docstring)."""
    ev = event(actor, kind, obj, summary=summary, before=before, after=after, detail=detail)
    ev.save(force_insert=True)
    return ev


def record_many(events: Iterable[AuditEvent]) -> int:
    """Record several events in one statement (a bulk deletion, a retention sweep)."""
    made = AuditEvent.objects.bulk_create(list(events), batch_size=1000)
    return len(made)


def changes(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(before, after)`` holding only the fields whose value changed (an edit's record)."""
    keys = [k for k in new if old.get(k) != new.get(k)]
    return {k: old.get(k) for k in keys}, {k: new.get(k) for k in keys}

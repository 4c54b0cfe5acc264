"""The restore's background recorder: writes in order, on its own connection, errors raised
on drain (never lost), and nothing left running."""

from __future__ import annotations

import threading

import pytest

from snapshots.restore.background import Recorder
from squirrel import audit
from squirrel.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_writes_run_in_order_on_another_thread_and_commit():
    seen: list[str] = []

    def write(name: str) -> None:
        seen.append(threading.current_thread().name)
        audit.record("system:test", "pv.update", ("pv", name))

    with Recorder() as recorder:
        for name in ("a", "b", "c"):
            recorder.submit(write, name)
        recorder.drain()
        assert [e.object_id for e in AuditEvent.objects.order_by("id")] == ["a", "b", "c"]
    assert all(n.startswith("restore-record") for n in seen)
    assert not any(t.name.startswith("restore-record") for t in threading.enumerate())


def test_a_failed_write_rolls_back_and_is_raised_on_drain():
    def broken() -> None:
        audit.record("system:test", "pv.update", ("pv", "x"))
        raise RuntimeError("COPY failed")

    recorder = Recorder()
    recorder.submit(broken)
    with pytest.raises(RuntimeError, match="COPY failed"):
        recorder.drain()
    assert not AuditEvent.objects.exists()  # its transaction rolled back
    # Leaving on another error keeps that error (and still drains and closes).
    recorder.submit(broken)
    with pytest.raises(ValueError, match="the restore's own"), recorder:
        raise ValueError("the restore's own")

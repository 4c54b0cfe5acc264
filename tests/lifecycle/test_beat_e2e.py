"""Schedules end to end with REAL ``celery -A squirrel beat`` and worker processes.

A 2-second schedule produces snapshots; retention (after each run) keeps exactly ``keepLast``
unprotected ones plus every golden one; restarting beat after a pause does not burst.
"""

from __future__ import annotations

import time

import pytest

from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots.models import GOLDEN, Snapshot, SnapshotSchedule
from squirrel.models import AuditEvent
from tests.conftest import payload
from tests.processes import Beat, Worker, worker_env
from tests.processes import workers as workers  # the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _jobs(schedule_id: str) -> list[Job]:
    return list(Job.objects.filter(job_data__schedule_id=schedule_id).order_by("created_at"))


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cached_catalog(redis_client, monitor_heartbeat):
    pvs = [PV.objects.create(setpoint_address=f"BEAT:{i}:SP") for i in range(20)]
    now = time.time()
    redis_client.hset(
        events.values_hash(),
        mapping={
            pv.setpoint_address: values.pack(
                {"value": float(i), "connected": True, "updated_at": now, "severity": 0}
            )
            for i, pv in enumerate(pvs)
        },
    )
    return pvs


def test_beat_runs_schedule_retention_keeps_last_and_golden_no_burst(
    write_client, workers, cached_catalog
):
    body = {"name": "every 2 s", "intervalSeconds": 2, "keepLast": 2,
            "titleTemplate": "tuning {date} {time}"}  # fmt: skip
    schedule_id = payload(write_client.post("/v1/snapshot-schedules", body, format="json"))["id"]
    env = worker_env()
    workers.append(Worker(env).start())
    beat = Beat(env).start()
    workers.append(beat)
    try:
        _wait(
            lambda: Snapshot.objects.filter(schedule_id=schedule_id).count() >= 2,
            30,
            "two scheduled snapshots",
        )
        first = Snapshot.objects.filter(schedule_id=schedule_id).order_by("created_at").first()
        assert first is not None and first.title.startswith("tuning ")
        assert first.created_by == "schedule:every 2 s"
        labelled = write_client.put(
            f"/v1/snapshots/{first.pk}/labels", {"labels": [GOLDEN]}, format="json"
        )
        assert payload(labelled)["labels"] == [GOLDEN]
        # Several more runs, each followed by its retention.
        _wait(lambda: len(_jobs(schedule_id)) >= 6, 40, "six runs")
    finally:
        beat.stop()
    _wait(lambda: all(j.finished for j in _jobs(schedule_id)), 30, "the last capture")
    kept = Snapshot.objects.filter(schedule_id=schedule_id)
    assert kept.filter(labels__contains=[GOLDEN]).count() == 1
    unprotected = list(kept.unprotected().newest_first())
    # The last run's retention has applied: exactly keepLast unprotected, the newest ones.
    completed = [j for j in _jobs(schedule_id) if j.status == Job.Status.COMPLETED]
    assert len(completed) >= 5, beat.output()[-3000:]
    assert [str(s.pk) for s in unprotected] == [j.result_id for j in completed[::-1][:2]]
    deleted = AuditEvent.objects.filter(kind="snapshot.delete", actor="system:retention")
    assert deleted.count() == len(completed) - 3  # all but golden + keepLast
    assert first.pk in set(kept.values_list("pk", flat=True))

    # Beat down for ~4 intervals, then back: one catch-up run at most, no burst.
    before = len(_jobs(schedule_id))
    time.sleep(8)
    assert len(_jobs(schedule_id)) == before  # nothing runs while beat is down
    restarted = Beat(env).start()
    workers.append(restarted)
    started = time.monotonic()
    _wait(lambda: len(_jobs(schedule_id)) > before, 15, "a run after the restart")
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))
    restarted.stop()
    after = _jobs(schedule_id)[before:]
    assert 1 <= len(after) <= 2, [j.created_at for j in after]
    gaps = [
        (b.created_at - a.created_at).total_seconds()
        for a, b in zip(after, after[1:], strict=False)
    ]
    assert all(g >= 1.0 for g in gaps), gaps
    assert SnapshotSchedule.objects.get(pk=schedule_id).last_run_at is not None

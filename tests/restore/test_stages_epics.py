"""Staged restores against the simulated IOC with a REAL Celery worker (issue 18, "Must show").

The order is observed at the IOC: the timestamp the IOC gave each setpoint when it took the
write, read with caproto's own synchronous client (never through our code).
"""

from __future__ import annotations

import uuid

import pytest
from caproto import ChannelType

from jobs.models import Job
from monitor import sim
from pvs.models import PV
from snapshots.models import Restore
from squirrel.models import AuditEvent
from tests.conftest import payload
from tests.epics import SoftIoc
from tests.restore.conftest import SimIOC, Worker, ca_read, snapshot_make, worker_env
from tests.restore.test_epics import COUNT, _prefix, catalog, detail, outcomes, sp, wait_job

pytestmark = [
    pytest.mark.epics,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]

# analog devices (no drive limit but 8's, which the saved values stay within)
STAGES = {0: (6, 7), 1: (9, 10), 2: (8, 11)}


def ioc_stamps(ioc: SimIOC, names: list[str]) -> dict[str, float]:
    """The IOC's timestamp of each PV's current value (when it took the last write)."""
    return {
        name: ioc.read(name, data_type=ChannelType.TIME_DOUBLE).metadata.timestamp for name in names
    }


def test_stages_run_in_order_each_verified_before_the_next(iocs, workers, write_client):
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    for stage, devices in STAGES.items():
        PV.objects.filter(pk__in=[pvs[i].pk for i in devices]).update(restore_stage=stage)
    PV.objects.filter(pk=pvs[9].pk).update(completion_timeout=3.0)
    snap = snapshot_make([(pvs[i], sim.base_value(i) + 7.0) for d in STAGES.values() for i in d])
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2")).start())

    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])

    names = {stage: [sp(prefix, i) for i in devices] for stage, devices in STAGES.items()}
    values = ca_read([n for group in names.values() for n in group])
    for devices in STAGES.values():
        for i in devices:
            assert values[sp(prefix, i)] == pytest.approx(sim.base_value(i) + 7.0)
    stamps = {stage: ioc_stamps(iocs[0], group) for stage, group in names.items()}
    # Every stage-0 setpoint was written before every stage-1 setpoint, and so on.
    assert max(stamps[0].values()) < min(stamps[1].values()), stamps
    assert max(stamps[1].values()) < min(stamps[2].values()), stamps

    result = job.job_data["result"]
    assert [s["stage"] for s in result["stages"]] == [0, 1, 2]
    assert all(s["successCount"] == 2 and s["failureCount"] == 0 for s in result["stages"])
    for earlier, later in zip(result["stages"], result["stages"][1:], strict=False):
        assert earlier["finishedAt"] <= later["startedAt"]
    record = detail(write_client, body["restoreId"])
    assert record["stages"] == result["stages"] and record["stopOnFailure"] is False
    assert {o["pvName"]: o["stage"] for o in record["outcomes"]} == {
        sp(prefix, i): stage for stage, devices in STAGES.items() for i in devices
    }
    finished = AuditEvent.objects.get(kind="restore.complete", object_id=body["restoreId"])
    assert finished.actor == "api-key:writer"
    assert [s["stage"] for s in finished.detail["stages"]] == [0, 1, 2]
    assert AuditEvent.objects.filter(
        kind="restore.request", object_id=body["restoreId"], actor="api-key:writer"
    ).exists()


def test_stop_on_failure_leaves_later_stages_not_attempted(iocs, workers, write_client):
    up, down = _prefix(), _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=up).start())
    iocs.append(SimIOC(count=COUNT, prefix=down).start())
    pvs_up, pvs_down = catalog(up), catalog(down)
    PV.objects.filter(pk__in=[pvs_up[9].pk, pvs_up[10].pk]).update(restore_stage=1)
    rows = [(pvs_up[i], sim.base_value(i) + 3.0) for i in (6, 7, 9, 10)]
    rows.append((pvs_down[6], sim.base_value(6) + 3.0))  # stage 0, on the IOC that goes down
    snap = snapshot_make(rows)
    before = ca_read([sp(up, 9), sp(up, 10)])
    iocs[1].stop()
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="1")).start())

    body = payload(
        write_client.post(
            f"/v1/snapshots/{snap.pk}/restore", {"stopOnFailure": True}, format="json"
        )
    )
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])
    got = outcomes(body["restoreId"])
    assert got[sp(down, 6)] == "disconnected"
    assert got[sp(up, 6)] == got[sp(up, 7)] == "verified"  # the rest of stage 0 is written
    assert got[sp(up, 9)] == got[sp(up, 10)] == "not-attempted"
    assert ca_read([sp(up, 9), sp(up, 10)]) == before  # never written
    stages = {s["stage"]: s for s in job.job_data["result"]["stages"]}
    assert (stages[0]["successCount"], stages[0]["failureCount"]) == (2, 1)
    assert stages[1]["notAttempted"] == 2 and stages[1]["startedAt"] is None
    restore = Restore.objects.get(pk=body["restoreId"])
    assert restore.stop_on_failure and restore.failure_count == 3
    record = detail(write_client, body["restoreId"])
    not_attempted = [o for o in record["outcomes"] if o["outcome"] == "not-attempted"]
    assert all("stage 0 had a failure" in o["error"] for o in not_attempted)

    # Without stopOnFailure the same failure leaves stage 1 to run.
    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"])
    got = outcomes(body["restoreId"])
    assert got[sp(up, 9)] == got[sp(up, 10)] == "verified"


# Two setpoints whose puts complete 3 s after the IOC takes them (a calcout's output delay).
SLOW_RECORDS = "\n".join(
    f'record(ao, "$(P){n}") {{ field(VAL, "0") field(FLNK, "$(P){n}:DLY") }}\n'
    f'record(calcout, "$(P){n}:DLY") {{ field(CALC, "A") field(INPA, "$(P){n}") '
    f'field(ODLY, "3") field(OUT, "$(P){n}:RB PP") }}\n'
    f'record(ai, "$(P){n}:RB") {{ }}'
    for n in ("WAITED", "DEFAULT")
)


def test_a_pv_completion_timeout_is_how_long_its_put_is_waited_for(
    tmp_path, monkeypatch, workers, write_client
):
    ioc = SoftIoc(tmp_path, f"C{uuid.uuid4().hex[:5].upper()}:", extra=SLOW_RECORDS)
    for key, value in ioc.env().items():
        monkeypatch.setenv(key, value)
    ioc.start()
    try:
        waited = PV.objects.create(setpoint_address=ioc.name("WAITED"), completion_timeout=8.0)
        default = PV.objects.create(setpoint_address=ioc.name("DEFAULT"))
        snap = snapshot_make([(waited, 5.0), (default, 6.0)])
        # The default (SQUIRREL_EPICS_TIMEOUT) is shorter than the IOC's 3 s completion.
        workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="1")).start())
        body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
        job = wait_job(body["jobId"], timeout=60)
    finally:
        ioc.kill()
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])
    got = outcomes(body["restoreId"])
    assert got[ioc.name("WAITED")] == "verified"  # its put was waited for until it completed
    assert got[ioc.name("DEFAULT")] == "write-unknown"  # sent, not complete within 1 s

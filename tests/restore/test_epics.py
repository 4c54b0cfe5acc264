"""Restores against the simulated IOC with a REAL Celery worker (issue 5, "Must show").

Every check of the machine reads the IOC directly with caproto's synchronous client
(``ca_read``), never through our cache or our CA client.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from jobs.models import Job
from monitor import sim
from pvs.models import PV
from snapshots.models import Outcome, Restore, RestoreOutcome, Snapshot
from snapshots.restore.records import OUTCOME_NAMES
from snapshots.restore.run import restore_reap_orphans
from squirrel.models import AuditEvent
from tests.conftest import payload
from tests.epics import SoftIoc
from tests.restore.conftest import SimIOC, Worker, ca_read, snapshot_make, worker_env

pytestmark = [
    pytest.mark.epics,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
]

COUNT = 12
ANALOG = [6, 7, 8, 9, 10, 11]  # analog devices without drive limits except 8
CLAMPED = 0  # analog with DRVH = 100


def _prefix() -> str:
    return f"R{uuid.uuid4().hex[:6].upper()}"


def catalog(prefix: str, count: int = COUNT) -> dict[int, PV]:
    """The sim IOC's devices as catalog PVs (as its CSV would import them)."""
    out = {}
    for d in sim.sim_devices(count=count, prefix=prefix, update_share=0.0):
        numeric = d.kind in ("analog", "readonly")
        out[d.index] = PV.objects.create(
            setpoint_address=d.setpoint,
            readback_address=d.readback,
            device=d.name,
            read_only=d.kind == "readonly",
            abs_tolerance=0.05 if numeric else 0.0,
            rel_tolerance=0.001 if numeric else 0.0,
        )
    return out


def saved_snapshot(pvs: dict[int, PV], *, title: str = "saved") -> Snapshot:
    """Saved values that differ from the IOC's initial ones (device 2 equals it)."""
    rows = [(pvs[i], sim.base_value(i) + 10.0) for i in ANALOG]
    rows += [
        (pvs[CLAMPED], 150.0),  # beyond DRVH: the IOC clamps it to 100
        (pvs[1], ("OFF", 0)),  # binary, initially ON
        (pvs[2], (sim.MULTI_LABELS[2], 2)),  # multi, equal to the live value
        (pvs[3], "restored-3"),  # string
        (pvs[4], 42.0),  # read-only
    ]
    return snapshot_make(rows, title=title)


def sp(prefix: str, i: int) -> str:
    return f"{prefix}:DEV{i}:SP"


def wait_job(job_id: str, *, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    job = Job.objects.get(pk=job_id)
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.status in (Job.Status.COMPLETED, Job.Status.FAILED):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} ({job.message})")


def outcomes(restore_id: str) -> dict[str, str]:
    return {
        name: OUTCOME_NAMES[o]
        for name, o in RestoreOutcome.objects.filter(restore_id=restore_id).values_list(
            "pv_name", "outcome"
        )
    }


def detail(client, restore_id: str) -> dict:
    response = client.get(f"/v1/restores/{restore_id}")
    body = json.loads(b"".join(response.streaming_content))
    assert response.status_code == 200 and body["errorCode"] == 0, body
    return body["payload"]


def test_restore_verifies_and_revert_puts_back(iocs, workers, write_client):
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    snap = saved_snapshot(pvs)
    before = ca_read([sp(prefix, i) for i in (*ANALOG, CLAMPED, 1, 3)])
    ro_before = ca_read([f"{prefix}:DEV4:RBV"])[f"{prefix}:DEV4:RBV"]
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2")).start())

    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])

    # The machine, read directly.
    after = ca_read([sp(prefix, i) for i in (*ANALOG, CLAMPED, 1, 3)])
    for i in ANALOG:
        assert after[sp(prefix, i)] == pytest.approx(sim.base_value(i) + 10.0)
    assert after[sp(prefix, CLAMPED)] == pytest.approx(sim.DRIVE_LIMIT)
    assert after[sp(prefix, 1)] == "OFF"
    assert after[sp(prefix, 3)] == "restored-3"
    assert ca_read([f"{prefix}:DEV4:RBV"])[f"{prefix}:DEV4:RBV"] == pytest.approx(ro_before)

    got = outcomes(body["restoreId"])
    assert {got[sp(prefix, i)] for i in ANALOG} == {"verified"}
    assert got[sp(prefix, CLAMPED)] == "mismatch"
    assert got[sp(prefix, 1)] == "verified" and got[sp(prefix, 3)] == "verified"
    assert got[sp(prefix, 2)] == "skipped-equal"
    assert got[f"{prefix}:DEV4:RBV"] == "skipped-read-only"

    result = job.job_data["result"]
    assert (result["total_pvs"], result["success_count"], result["failure_count"]) == (9, 8, 1)
    assert result["failures"][0]["pvName"] == sp(prefix, CLAMPED)
    assert "clamped" in result["failures"][0]["error"]
    assert result["counts"]["mismatch"] == 1 and result["counts"]["verified"] == 8
    assert job.message == "Restored 8/9 PVs (1 failed)"
    assert job.attempts == 1

    record = detail(write_client, body["restoreId"])
    assert record["status"] == "completed" and record["createdBy"] == "api-key:writer"
    assert record["outcomes"][0]["outcome"] == "mismatch"  # failures first
    safety = Snapshot.objects.get(pk=record["safetySnapshotId"])
    assert safety.kind == Snapshot.Kind.SAFETY
    # Exactly the PVs that were about to be written.
    assert set(safety.values.values_list("pv_name", flat=True)) == {
        sp(prefix, i) for i in (*ANALOG, CLAMPED, 1, 3)
    }

    revert = payload(
        write_client.post(f"/v1/restores/{body['restoreId']}/revert", {}, format="json")
    )
    job = wait_job(revert["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error
    assert job.job_data["result"]["failure_count"] == 0, job.job_data["result"]
    back = ca_read([sp(prefix, i) for i in (*ANALOG, CLAMPED, 1, 3)])
    for name, value in before.items():
        assert back[name] == (value if isinstance(value, str) else pytest.approx(value)), name
    assert Restore.objects.get(pk=revert["restoreId"]).reverts_id == uuid.UUID(body["restoreId"])

    # Both writes of the machine are in the audit trail, with the caller's identity.
    events = {
        (e.kind, e.object_id): e
        for e in AuditEvent.objects.filter(object_type="restore", actor="api-key:writer")
    }
    asked = events[("revert.request", revert["restoreId"])]
    assert asked.detail["revertsId"] == body["restoreId"]
    assert ("revert.complete", revert["restoreId"]) in events
    assert {("restore.request", body["restoreId"]), ("restore.complete", body["restoreId"])} <= set(
        events
    )


def test_plan_then_execute_writes_exactly_the_plan(iocs, workers, write_client):
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    snap = saved_snapshot(pvs)
    chosen = [pvs[6], pvs[7]]
    plan = payload(
        write_client.post(
            f"/v1/snapshots/{snap.pk}/restore-plan",
            {"pvIds": [str(p.pk) for p in chosen]},
            format="json",
        )
    )
    assert plan["counts"]["write"] == 2 and plan["total"] == 2
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2")).start())
    body = payload(write_client.post(f"/v1/restore-plans/{plan['id']}/execute", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error
    assert job.message == "All 2 PVs have been restored to their snapshot values."
    now = ca_read([sp(prefix, i) for i in ANALOG])
    for i in ANALOG:
        expected = sim.base_value(i) + (10.0 if i in (6, 7) else 0.0)
        assert now[sp(prefix, i)] == pytest.approx(expected), i
    assert outcomes(body["restoreId"]) == {sp(prefix, 6): "verified", sp(prefix, 7): "verified"}


def test_ioc_down_is_reported_and_the_others_succeed(iocs, workers, write_client):
    up, down = _prefix(), _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=up).start())
    iocs.append(SimIOC(count=COUNT, prefix=down).start())
    pvs_up, pvs_down = catalog(up), catalog(down)
    rows = [(pvs_up[i], sim.base_value(i) + 5.0) for i in ANALOG]
    rows += [(pvs_down[i], sim.base_value(i) + 5.0) for i in ANALOG]
    snap = snapshot_make(rows)
    plan = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore-plan", {}, format="json"))
    assert plan["counts"]["write"] == 12
    iocs[1].stop()
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="1")).start())
    body = payload(write_client.post(f"/v1/restore-plans/{plan['id']}/execute", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error
    got = outcomes(body["restoreId"])
    assert {got[sp(up, i)] for i in ANALOG} == {"verified"}
    assert {got[sp(down, i)] for i in ANALOG} == {"timed-out"}
    result = job.job_data["result"]
    assert (result["success_count"], result["failure_count"]) == (6, 6)
    assert {f["pvName"] for f in result["failures"]} == {sp(down, i) for i in ANALOG}
    now = ca_read([sp(up, i) for i in ANALOG])
    assert all(now[sp(up, i)] == pytest.approx(sim.base_value(i) + 5.0) for i in ANALOG)

    # A plain restore while the IOC is down: planned as disconnected, counted as failed.
    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error
    got = outcomes(body["restoreId"])
    assert {got[sp(down, i)] for i in ANALOG} == {"disconnected"}
    assert {got[sp(up, i)] for i in ANALOG} == {"skipped-equal"}
    assert job.job_data["result"]["failure_count"] == 6


def test_sigkilled_worker_is_not_retried_and_what_was_written_is_recorded(
    iocs, workers, write_client
):
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    # A readback that never follows (another device's): verification waits the settle time,
    # long enough to kill the worker after the write and before the outcome is recorded.
    PV.objects.filter(pk=pvs[6].pk).update(readback_address=f"{prefix}:DEV4:RBV")
    snap = snapshot_make([(pvs[6], 55.0), (pvs[7], 66.0)])
    first = Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2")).start()
    workers.append(first)
    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if Restore.objects.filter(pk=body["restoreId"], attempted_through__isnull=False).exists():
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the restore never started writing:\n" + first.output()[-3000:])
    time.sleep(0.3)  # the put and first read-back are done; the settle wait is running
    first.kill()
    assert Restore.objects.get(pk=body["restoreId"]).status == Restore.Status.RUNNING

    time.sleep(1.5)
    reaped = restore_reap_orphans(stale_after=1.0)
    assert [str(r.pk) for r in reaped] == [body["restoreId"]]
    restore = Restore.objects.get(pk=body["restoreId"])
    assert restore.status == Restore.Status.FAILED and "not retried" in restore.error
    got = outcomes(body["restoreId"])
    assert got == {sp(prefix, 6): "interrupted", sp(prefix, 7): "interrupted"}
    written = RestoreOutcome.objects.get(restore=restore, pv_name=sp(prefix, 6))
    assert written.outcome == Outcome.INTERRUPTED and json.loads(written.written) == 55.0
    job = Job.objects.get(pk=body["jobId"])
    assert job.status == Job.Status.FAILED and job.attempts == 1

    # The writes did happen, and nobody replays them: a new worker leaves the restore alone.
    assert ca_read([sp(prefix, 6)])[sp(prefix, 6)] == pytest.approx(55.0)
    workers.append(Worker(worker_env()).start())
    time.sleep(3)
    assert Job.objects.get(pk=body["jobId"]).attempts == 1
    assert RestoreOutcome.objects.filter(restore=restore).count() == 2
    assert Restore.objects.get(pk=body["restoreId"]).status == Restore.Status.FAILED


def test_puts_sent_when_the_ioc_dies_are_unknown_not_failed(
    tmp_path, monkeypatch, workers, write_client
):
    # SLOW completes a put only 30 s after taking it: the IOC is killed while that put is in
    # flight. ENUM's saved value is no label of its: refused before anything is sent.
    ioc = SoftIoc(tmp_path, f"U{uuid.uuid4().hex[:5].upper()}:")
    for key, value in ioc.env().items():
        monkeypatch.setenv(key, value)
    ioc.start()
    try:
        slow = PV.objects.create(setpoint_address=ioc.name("SLOW"))
        enum = PV.objects.create(setpoint_address=ioc.name("ENUM"))
        snap = snapshot_make([(slow, 5.0), (enum, "NoSuchLabel")])
        workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="10")).start())
        body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
        deadline = time.monotonic() + 30
        while not Restore.objects.filter(
            pk=body["restoreId"], attempted_through__isnull=False
        ).exists():
            assert time.monotonic() < deadline, workers[0].output()[-3000:]
            time.sleep(0.02)
        time.sleep(1.0)  # the puts are out; SLOW's answer is 29 s away
        ioc.kill()
        job = wait_job(body["jobId"], timeout=30)
    finally:
        ioc.kill()
    assert job.status == Job.Status.COMPLETED, (job.error, workers[0].output()[-3000:])

    got = outcomes(body["restoreId"])
    assert got == {ioc.name("SLOW"): "write-unknown", ioc.name("ENUM"): "write-failed"}
    unknown = RestoreOutcome.objects.get(restore_id=body["restoreId"], pv_name=ioc.name("SLOW"))
    assert "may have been applied" in unknown.error and json.loads(unknown.written) == 5.0
    # The report says unknown for the put that was sent, failed for the one refused.
    assert job.message == "Restored 0/2 PVs (1 failed, 1 unknown)"
    result = job.job_data["result"]
    assert (result["failure_count"], result["unknown_count"]) == (2, 1)
    assert result["counts"]["write-unknown"] == 1 and result["counts"]["write-failed"] == 1
    assert {f["pvName"]: f["outcome"] for f in result["failures"]} == got
    record = detail(write_client, body["restoreId"])
    assert (record["failureCount"], record["unknownCount"]) == (2, 1)
    assert {o["pvName"]: o["outcome"] for o in record["outcomes"]} == got


def test_sync_restore_answers_the_restore_result(iocs, write_client):
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    snap = saved_snapshot(pvs)
    body = payload(
        write_client.post(f"/v1/snapshots/{snap.pk}/restore?async=false", {}, format="json")
    )
    assert body["totalPVs"] == 9
    assert (body["successCount"], body["failureCount"]) == (8, 1)
    assert body["failures"] == [
        {
            "pvId": str(pvs[CLAMPED].pk),
            "pvName": sp(prefix, CLAMPED),
            "outcome": "mismatch",
            "error": body["failures"][0]["error"],
        }
    ]
    assert body["counts"]["skipped-equal"] == 1 and body["counts"]["skipped-read-only"] == 1
    now = ca_read([sp(prefix, i) for i in ANALOG])
    assert all(now[sp(prefix, i)] == pytest.approx(sim.base_value(i) + 10.0) for i in ANALOG)
    job = Job.objects.get(pk=Restore.objects.get(pk=body["restoreId"]).job_id)
    assert job.status == Job.Status.COMPLETED and job.message == "Restored 8/9 PVs (1 failed)"


def test_command_restores_with_yes(iocs, capsys):
    from django.core.management import call_command

    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    snap = saved_snapshot(pvs)
    with pytest.raises(SystemExit) as exited:  # one PV (the clamped one) failed
        call_command("restore", str(snap.pk), "--yes")
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "write                   9" in out
    assert "8 verified, 1 failed of 9" in out
    assert f"{sp(prefix, CLAMPED)}" in out and "mismatch" in out
    now = ca_read([sp(prefix, i) for i in ANALOG])
    assert all(now[sp(prefix, i)] == pytest.approx(sim.base_value(i) + 10.0) for i in ANALOG)
    restore = Restore.objects.get()
    assert restore.created_by.startswith("cli:") and restore.status == "completed"


def test_imported_read_back_only_pv_is_listed_writable_never(iocs, workers, write_client, tmp_path):
    """A CSV row with a Readback and no Setpoint: listed with a setpointAddress (the React
    frontend drops rows without one) and read-only, and never written by a restore."""
    from django.core.management import call_command

    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    rbv = f"{prefix}:DEV4:RBV"  # device 4 is read-back-only on the sim IOC
    csv = tmp_path / "catalog.csv"
    csv.write_text(f"Setpoint,Readback,Description\n,{rbv},read-back only\n")
    call_command("import_pvs", str(csv), "--no-progress")
    pv = PV.objects.get(readback_address=rbv)
    assert pv.setpoint_address is None and pv.read_only is False  # as imported

    listed = payload(write_client.get("/v1/pvs/paged", {"pvName": rbv}))["results"]
    assert [(e["setpointAddress"], e["readbackAddress"], e["readOnly"]) for e in listed] == [
        (rbv, rbv, True)
    ]

    live = ca_read([rbv])[rbv]
    snap = snapshot_make([(pv, live + 25.0)], title="rb only")
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2")).start())
    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"])
    assert job.status == Job.Status.COMPLETED, job.error
    assert outcomes(body["restoreId"]) == {rbv: "skipped-read-only"}
    assert ca_read([rbv])[rbv] == pytest.approx(live)  # the IOC, read directly: untouched


def test_noisy_readbacks_without_tolerance_are_warnings_not_failures(iocs, workers, write_client):
    """Setpoints written and read back equal are restored whatever their readbacks do; with no
    tolerance configured a differing readback is a warning, counted apart and never waited for
    (the settle time here is 30 s)."""
    prefix = _prefix()
    iocs.append(SimIOC(count=COUNT, prefix=prefix).start())
    pvs = catalog(prefix)
    noisy = ANALOG[:4]
    for i in noisy:  # a readback that never follows its setpoint (another device's), no tolerance
        PV.objects.filter(pk=pvs[i].pk).update(
            readback_address=f"{prefix}:DEV4:RBV", abs_tolerance=0.0, rel_tolerance=0.0
        )
    snap = snapshot_make([(pvs[i], sim.base_value(i) + 3.0) for i in noisy])
    workers.append(
        Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2", SQUIRREL_RESTORE_SETTLE_TIME="30")).start()
    )
    started = time.monotonic()
    body = payload(write_client.post(f"/v1/snapshots/{snap.pk}/restore", {}, format="json"))
    job = wait_job(body["jobId"], timeout=25)
    assert time.monotonic() - started < 25  # the 30 s settle time was not waited for
    assert job.status == Job.Status.COMPLETED, job.error

    after = ca_read([sp(prefix, i) for i in noisy])
    assert all(after[sp(prefix, i)] == pytest.approx(sim.base_value(i) + 3.0) for i in noisy)
    assert set(outcomes(body["restoreId"]).values()) == {"readback-differs"}
    result = job.job_data["result"]
    assert (result["total_pvs"], result["success_count"], result["failure_count"]) == (4, 4, 0)
    assert result["warning_count"] == 4 and result["failures"] == []
    assert job.message == (
        "All 4 PVs have been restored to their snapshot values; "
        "4 readbacks differ from the setpoint (warnings)"
    )
    record = detail(write_client, body["restoreId"])
    assert (record["successCount"], record["failureCount"], record["warningCount"]) == (4, 0, 4)
    first = record["outcomes"][0]
    assert first["outcome"] == "readback-differs" and "no tolerance configured" in first["error"]
    assert first["setpointRead"] == pytest.approx(first["written"])  # both values recorded
    assert first["readbackRead"] != pytest.approx(first["written"])

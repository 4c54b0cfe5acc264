"""Restore plans, requests, claims, idempotency, the audit and orphans, without an IOC.

Live values come from the monitor's cache (a fresh heartbeat and connected entries), so the
plan never needs Channel Access here; the EPICS paths are in test_epics.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job
from pvs.models import PV
from snapshots.models import (
    Outcome,
    PlanAction,
    Restore,
    RestoreClaim,
    RestoreOutcome,
    RestorePlan,
    RestorePlanItem,
)
from snapshots.restore.execute import _note_attempt
from snapshots.restore.plan import ACTION_NAMES, NOT_IN_CATALOG, restore_plan_create
from snapshots.restore.records import RestoreAborted, restore_result_message
from snapshots.restore.request import restore_plan_execute_request, restore_request
from snapshots.restore.run import restore_reap_orphans, restore_run
from snapshots.restore.selection import Selection, selection_parse
from squirrel.exceptions import Conflict
from tests.conftest import error, payload
from tests.restore.conftest import cache_set, snapshot_make

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def machine(redis_client):
    """Five PVs, one of each plan action, and a snapshot of them; live values cached."""
    write = PV.objects.create(setpoint_address="T:W:SP", readback_address="T:W:RBV")
    equal = PV.objects.create(setpoint_address="T:E:SP", abs_tolerance=0.5)
    ro = PV.objects.create(setpoint_address="T:R:SP", read_only=True)
    novalue = PV.objects.create(setpoint_address="T:N:SP")
    rb_only = PV.objects.create(readback_address="T:O:RBV")
    gone = PV.objects.create(setpoint_address="T:G:SP")
    snap = snapshot_make(
        [(write, 1.0), (equal, 2.0), (ro, 3.0), (novalue, None), (rb_only, 4.0), (gone, 5.0)]
    )
    gone.delete()
    cache_set(redis_client, {"T:W:SP": 9.0, "T:E:SP": 2.4, "T:R:SP": 0.0, "T:N:SP": 0.0})
    return {"snap": snap, "write": write, "equal": equal, "ro": ro, "novalue": novalue}


def _actions(plan: RestorePlan) -> dict[str, str]:
    return {
        name: ACTION_NAMES[action] for name, action in plan.items.values_list("pv_name", "action")
    }


def test_plan_classifies_every_pv(machine):
    plan = restore_plan_create(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by="me"
    )
    assert _actions(plan) == {
        "T:W:SP": "write",
        "T:E:SP": "skip-equal",
        "T:R:SP": "skip-read-only",
        "T:N:SP": "skip-no-value",
        "T:O:RBV": "skip-read-only",
        "T:G:SP": "skip-read-only",
    }
    assert plan.total == 6
    assert plan.counts == {
        "write": 1,
        "skip-equal": 1,
        "skip-read-only": 3,
        "skip-no-value": 1,
        "disconnected": 0,
        "skip-not-permitted": 0,
    }
    item = plan.items.get(pv_name="T:W:SP")
    assert (item.saved, item.live, item.delta) == ("1.0", "9.0", 8.0)
    assert plan.items.get(pv_name="T:G:SP").note == NOT_IN_CATALOG


def test_plan_selection_by_ids_and_tags(machine):
    from tags.models import Tag, TagGroup

    group = TagGroup.objects.create(name="Area")
    tag = Tag.objects.create(name="LI20", group=group)
    machine["equal"].tags.add(tag)
    by_ids = restore_plan_create(
        snapshot_id=machine["snap"].pk,
        selection=Selection(pv_ids=(machine["write"].pk, uuid.uuid4())),
        created_by=None,
    )
    assert _actions(by_ids) == {"T:W:SP": "write"}
    by_tag = restore_plan_create(
        snapshot_id=machine["snap"].pk,
        selection=selection_parse(tag_filters=[[str(tag.pk)]]),
        created_by=None,
    )
    assert _actions(by_tag) == {"T:E:SP": "skip-equal"}


def test_plan_api_and_items(machine, write_client):
    body = payload(
        write_client.post(f"/v1/snapshots/{machine['snap'].pk}/restore-plan", {}, format="json")
    )
    assert body["counts"]["write"] == 1 and body["total"] == 6
    assert body["executable"] is True and body["restoreId"] is None
    assert body["createdBy"] == "api-key:writer"
    got = write_client.get(f"/v1/restore-plans/{body['id']}?action=write")
    detail = payload(got) if not hasattr(got, "streaming_content") else None
    if detail is None:
        import json

        raw = json.loads(b"".join(got.streaming_content))
        assert raw["errorCode"] == 0
        detail = raw["payload"]
    assert [i["pvName"] for i in detail["items"]] == ["T:W:SP"]
    item = detail["items"][0]
    assert (item["action"], item["savedValue"], item["liveValue"], item["delta"]) == (
        "write",
        1.0,
        9.0,
        8.0,
    )


def test_plan_api_errors(machine, write_client, read_client):
    snap = machine["snap"].pk
    error(write_client.post("/v1/snapshots/nope/restore-plan", {}, format="json"), 404)
    error(write_client.post(f"/v1/snapshots/{uuid.uuid4()}/restore-plan", {}, format="json"), 404)
    msg = error(
        write_client.post(f"/v1/snapshots/{snap}/restore-plan", {"pvIds": ["x"]}, format="json"),
        422,
    )
    assert "pvIds" in msg
    error(write_client.post(f"/v1/snapshots/{snap}/restore-plan", [1], format="json"), 422)
    error(read_client.post(f"/v1/snapshots/{snap}/restore-plan", {}, format="json"), 401)
    error(write_client.get("/v1/restore-plans/nope"), 404)
    error(write_client.get(f"/v1/restore-plans/{uuid.uuid4()}/execute"), 405)
    assert RestorePlan.objects.count() == 0


def test_restore_api_queues_a_job_and_claims(
    machine, write_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = payload(
            write_client.post(f"/v1/snapshots/{machine['snap'].pk}/restore", {}, format="json")
        )
    assert len(callbacks) == 1
    assert set(body) == {"jobId", "message", "restoreId"}
    assert body["message"] == f"Snapshot restore queued ({machine['snap'].pk})"
    job = Job.objects.get(pk=body["jobId"])
    assert (job.type, job.status, job.created_by) == (
        "snapshot_restore",
        "pending",
        "api-key:writer",
    )
    assert job.job_data["snapshotId"] == str(machine["snap"].pk)
    restore = Restore.objects.get(pk=body["restoreId"])
    assert restore.created_by == "api-key:writer" and restore.status == "pending"
    # Claims: the writable PVs only (write + equal; not read-only, readback-only or gone).
    assert set(RestoreClaim.objects.values_list("pv_id", flat=True)) == {
        machine["write"].pk,
        machine["equal"].pk,
        machine["novalue"].pk,
    }


def test_an_empty_pv_selection_queues_a_restore_of_nothing(machine, write_client):
    """pvIds: [] selects no PV (found by the fuzzer: it was a 500 from the claim's SQL)."""
    body = payload(
        write_client.post(
            f"/v1/snapshots/{machine['snap'].pk}/restore", {"pvIds": []}, format="json"
        )
    )
    assert set(body) == {"jobId", "message", "restoreId"}
    assert not RestoreClaim.objects.exists()


def test_overlapping_restore_is_409_and_writes_nothing(machine, write_client):
    snap = machine["snap"].pk
    payload(write_client.post(f"/v1/snapshots/{snap}/restore", {}, format="json"))
    counts = (Restore.objects.count(), Job.objects.count(), RestoreClaim.objects.count())
    msg = error(
        write_client.post(
            f"/v1/snapshots/{snap}/restore", {"pvIds": [str(machine["write"].pk)]}, format="json"
        ),
        409,
    )
    assert "already running over 1 of these PVs" in msg
    assert (Restore.objects.count(), Job.objects.count(), RestoreClaim.objects.count()) == counts
    # A disjoint selection is fine.
    other = PV.objects.create(setpoint_address="T:X:SP")
    from tests.restore.conftest import snapshot_make

    snap2 = snapshot_make([(other, 1.0)])
    payload(write_client.post(f"/v1/snapshots/{snap2.pk}/restore", {}, format="json"))


def test_idempotency_key_returns_the_same_job(machine, write_client):
    url = f"/v1/snapshots/{machine['snap'].pk}/restore"
    first = payload(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"))
    again = payload(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"))
    assert again == first
    assert Restore.objects.count() == 1
    msg = error(
        write_client.post(
            url, {"pvIds": [str(machine["write"].pk)]}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
        ),
        409,
    )
    assert "different request" in msg
    error(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 300), 422)


def test_execute_plan_rules(machine, write_client):
    plan = restore_plan_create(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None
    )
    url = f"/v1/restore-plans/{plan.pk}/execute"
    first = payload(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="p-1"))
    restore = Restore.objects.get(pk=first["restoreId"])
    assert restore.plan_id == plan.pk
    # Exactly the plan's write items are claimed.
    assert list(RestoreClaim.objects.values_list("pv_id", flat=True)) == [machine["write"].pk]
    assert payload(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="p-1")) == first
    assert "already executed" in error(write_client.post(url, {}, format="json"), 409)
    old = restore_plan_create(
        snapshot_id=machine["snap"].pk,
        selection=Selection(pv_ids=(machine["equal"].pk,)),
        created_by=None,
    )
    RestorePlan.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(seconds=10_000)
    )
    assert "make a new plan" in error(
        write_client.post(f"/v1/restore-plans/{old.pk}/execute", {}, format="json"), 409
    )
    error(write_client.post(f"/v1/restore-plans/{uuid.uuid4()}/execute", {}, format="json"), 404)


def test_revert_needs_a_finished_restore_with_a_safety_snapshot(machine, write_client):
    body = payload(
        write_client.post(f"/v1/snapshots/{machine['snap'].pk}/restore", {}, format="json")
    )
    url = f"/v1/restores/{body['restoreId']}/revert"
    assert "still pending" in error(write_client.post(url, {}, format="json"), 409)
    Restore.objects.filter(pk=body["restoreId"]).update(status=Restore.Status.COMPLETED)
    assert "nothing to revert" in error(write_client.post(url, {}, format="json"), 409)
    error(write_client.post("/v1/restores/nope/revert", {}, format="json"), 404)


def _running_restore(machine) -> Restore:
    plan = restore_plan_create(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None
    )
    extra = PV.objects.create(setpoint_address="T:W2:SP")
    RestorePlanItem.objects.create(
        plan=plan, pv_id=extra.pk, pv_name="T:W2:SP", setpoint_address="T:W2:SP",
        action=PlanAction.WRITE, saved="7.0",
    )  # fmt: skip
    restore = restore_plan_execute_request(plan_id=plan.pk, created_by="me", enqueue=False)
    first_write = plan.items.get(pv_name="T:W:SP")
    Restore.objects.filter(pk=restore.pk).update(
        status=Restore.Status.RUNNING,
        heartbeat_at=timezone.now() - timedelta(seconds=600),
        attempted_through=first_write.id,
        attempted=1,
    )
    Job.objects.filter(pk=restore.job_id).update(status=Job.Status.RUNNING)
    return restore


def test_polling_the_job_of_an_orphaned_restore_fails_it(machine, write_client):
    restore = _running_restore(machine)
    job = payload(write_client.get(f"/v1/jobs/{restore.job_id}"))
    assert job["status"] == "failed" and "not retried automatically" in job["error"]
    restore.refresh_from_db()
    assert restore.status == Restore.Status.FAILED


def test_orphaned_restore_is_failed_with_what_was_written(machine, write_client):
    restore = _running_restore(machine)
    listed = payload(write_client.get("/v1/restores"))  # the listing reaps orphans
    assert listed[0]["id"] == str(restore.pk)
    assert listed[0]["status"] == "failed"
    restore.refresh_from_db()
    assert "not retried automatically" in restore.error
    outcomes = dict(
        RestoreOutcome.objects.filter(restore=restore).values_list("pv_name", "outcome")
    )
    assert outcomes["T:W:SP"] == Outcome.INTERRUPTED
    assert outcomes["T:W2:SP"] == Outcome.NOT_ATTEMPTED
    assert outcomes["T:E:SP"] == Outcome.SKIPPED_EQUAL
    assert restore.counts["interrupted"] == 1 and restore.counts["not-attempted"] == 1
    assert (restore.total, restore.success_count, restore.failure_count) == (2, 0, 2)
    assert not RestoreClaim.objects.filter(restore=restore).exists()
    job = Job.objects.get(pk=restore.job_id)
    assert job.status == Job.Status.FAILED and "not retried" in job.error
    assert job.job_data["result"]["failure_count"] == 2
    # The worker, if it were still alive, stops before its next chunk.
    with pytest.raises(RestoreAborted):
        _note_attempt(restore, through=1, attempted=1)
    # A fresh heartbeat is left alone.
    fresh = restore_request(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None,
        enqueue=False,
    )  # fmt: skip
    Restore.objects.filter(pk=fresh.pk).update(
        status=Restore.Status.RUNNING, heartbeat_at=timezone.now()
    )
    assert restore_reap_orphans() == []


def test_restore_detail_lists_failures_first(machine, write_client):
    restore = _running_restore(machine)
    restore_reap_orphans()
    got = write_client.get(f"/v1/restores/{restore.pk}")
    import json

    body = json.loads(b"".join(got.streaming_content))
    assert got.status_code == 200 and body["errorCode"] == 0
    detail = body["payload"]
    assert detail["status"] == "failed" and detail["createdBy"] == "me"
    names = [o["outcome"] for o in detail["outcomes"]]
    assert names[:2] == ["interrupted", "not-attempted"]
    assert names.index("skipped-equal") > 1
    only = json.loads(
        b"".join(
            write_client.get(f"/v1/restores/{restore.pk}?outcome=interrupted").streaming_content
        )
    )["payload"]["outcomes"]
    assert [o["pvName"] for o in only] == ["T:W:SP"]
    assert only[0]["written"] == 1.0
    error(write_client.get(f"/v1/restores/{restore.pk}?outcome=bogus"), 422)
    error(write_client.get("/v1/restores/nope"), 404)
    error(write_client.get("/v1/restores?limit=0"), 422)


def test_restore_needs_write_scope(machine, read_client, api, settings):
    snap = machine["snap"].pk
    error(read_client.post(f"/v1/snapshots/{snap}/restore", {}, format="json"), 401)
    settings.ANONYMOUS_ACCESS = "read"
    error(api.post(f"/v1/snapshots/{snap}/restore", {}, format="json"), 401)
    assert Restore.objects.count() == 0
    payload(read_client.get("/v1/restores"))


def test_claim_conflict_names_the_holder(machine):
    first = restore_request(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None,
        enqueue=False,
    )  # fmt: skip
    with pytest.raises(Conflict, match=str(first.pk)):
        restore_request(
            snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None,
            enqueue=False,
        )  # fmt: skip


def test_command_plan_only_prints_the_plan(machine, capsys):
    from django.core.management import call_command

    call_command("restore", str(machine["snap"].pk), "--plan-only")
    out = capsys.readouterr().out
    assert "6 PVs" in out and "write                   1" in out
    assert "T:W:SP" in out
    assert Restore.objects.count() == 0


def test_command_errors(machine):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="not found"):
        call_command("restore", str(uuid.uuid4()), "--plan-only")
    with pytest.raises(CommandError, match="matches 0 tags"):
        call_command("restore", str(machine["snap"].pk), "--tag", "nope", "--plan-only")


def test_command_declined_writes_nothing(machine, monkeypatch, capsys):
    from django.core.management import call_command

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    call_command("restore", str(machine["snap"].pk))
    assert "Not restored." in capsys.readouterr().out
    assert Restore.objects.count() == 0


def test_a_restore_that_breaks_is_failed_and_releases_its_claims(machine):
    restore = restore_request(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by=None,
        enqueue=False,
    )  # fmt: skip
    machine["snap"].delete()  # gone before the worker starts: the run cannot plan
    done = restore_run(restore_id=str(restore.pk))
    assert done is not None and done.status == Restore.Status.FAILED
    assert done.error
    job = Job.objects.get(pk=restore.job_id)
    assert job.status == Job.Status.FAILED and job.error == done.error
    assert not RestoreClaim.objects.exists()
    # Run again (a redelivered message): nothing happens.
    assert restore_run(restore_id=str(restore.pk)) is None
    assert Job.objects.get(pk=restore.job_id).attempts == 1


# --- found by the schemathesis fuzz (tests/fuzz): bad input is a 4xx, never a 5xx -----------

PAST_BIGINT = 35717090318346461184  # PostgreSQL refuses such a LIMIT/OFFSET (was a 503)


def test_limits_and_offsets_past_the_database_range_are_422(machine, write_client):
    # The details stream their rows: the check must come before the 200 starts.
    restore = _running_restore(machine)
    plan = restore_plan_create(
        snapshot_id=machine["snap"].pk, selection=Selection(), created_by="me"
    )
    for path in ("/v1/restores", f"/v1/restores/{restore.pk}", f"/v1/restore-plans/{plan.pk}"):
        for name in ("limit", "offset"):
            low = 1 if (path, name) == ("/v1/restores", "limit") else 0
            message = error(write_client.get(f"{path}?{name}={PAST_BIGINT}"), 422)
            assert message == f"Validation error: {name}: an integer from {low} to 2147483647"
    got = write_client.get(f"/v1/restores/{restore.pk}?offset={2**31 - 1}")
    assert got.status_code == 200 and b'"outcomes":[]' in b"".join(got.streaming_content)


@pytest.mark.parametrize("key", ["a\x00b", "tab\tinside", "\x7f"])
def test_idempotency_key_with_control_characters_is_422_not_503(machine, write_client, key):
    url = f"/v1/snapshots/{machine['snap'].pk}/restore"
    message = error(write_client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY=key), 422)
    assert message == "Validation error: Idempotency-Key: 1 to 255 printable characters"
    assert Restore.objects.count() == 0


def test_result_message_says_unknown_for_puts_that_may_have_been_applied():
    assert restore_result_message(total=9, success=9, failed=0) == (
        "All 9 PVs have been restored to their snapshot values."
    )
    assert restore_result_message(total=9, success=8, failed=1) == "Restored 8/9 PVs (1 failed)"
    assert restore_result_message(total=1200, success=1000, failed=200, unknown=50) == (
        "Restored 1,000/1,200 PVs (150 failed, 50 unknown)"
    )
    assert restore_result_message(total=2, success=0, failed=2, unknown=2) == (
        "Restored 0/2 PVs (2 unknown)"
    )

"""Restore governance without an IOC (issue 18): the restore scope on every machine-writing
route, staff users and the "Restorers" group, approval of plans made without the scope,
per-tag restore rights, stages in plans.

Live values come from the monitor's cache, so plans never need Channel Access here; requests
are accepted but never run (no worker; ``on_commit`` does not fire inside a test transaction).
The staged execution against the sim IOC is in test_stages_epics.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from pvs.models import PV
from snapshots.models import PlanAction, Restore, RestorePlan, Snapshot
from snapshots.restore.plan import ACTION_NAMES
from squirrel.models import RESTORERS_GROUP, AuditEvent, UserRestoreLimit
from tags.models import Tag, TagGroup
from tests.conftest import error, make_key, payload
from tests.restore.conftest import cache_set, snapshot_make

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def machine(redis_client):
    """Three PVs in stages 2, 0 and 1 (tags A, A, B) and a snapshot differing from live."""
    area = TagGroup.objects.create(name="Area")
    tag_a = Tag.objects.create(group=area, name="A")
    tag_b = Tag.objects.create(group=area, name="B")
    rf = PV.objects.create(setpoint_address="G:RF:SP", restore_stage=2)
    mag = PV.objects.create(setpoint_address="G:MAG:SP", restore_stage=0)
    cryo = PV.objects.create(setpoint_address="G:CRYO:SP", restore_stage=1, completion_timeout=60)
    rf.tags.add(tag_a)
    mag.tags.add(tag_a)
    cryo.tags.add(tag_b)
    snap = snapshot_make([(rf, 1.0), (mag, 2.0), (cryo, 3.0)])
    cache_set(redis_client, {"G:RF:SP": 9.0, "G:MAG:SP": 9.0, "G:CRYO:SP": 9.0})
    return {"snap": snap, "a": tag_a, "b": tag_b, "rf": rf, "mag": mag, "cryo": cryo}


def client_for(**scopes: Any) -> APIClient:
    _, token = make_key(f"k-{uuid.uuid4().hex[:8]}", **scopes)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def staff_client(*, restorer: bool, tags: list[Tag] | None = None) -> APIClient:
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    if restorer:
        user.groups.add(Group.objects.get(name=RESTORERS_GROUP))
    if tags is not None:
        UserRestoreLimit.objects.create(user=user, tag_ids=[t.pk for t in tags])
    client = APIClient()
    client.force_login(user)
    return client


def _plan(client: APIClient, snap: Snapshot) -> dict[str, Any]:
    return payload(client.post(f"/v1/snapshots/{snap.pk}/restore-plan", {}, format="json"))


# --- the scope matrix ---------------------------------------------------------------------------


def _finished_restore(snap: Snapshot) -> Restore:
    """A completed restore with a safety snapshot: something a revert may put back."""
    safety = snapshot_make([(PV.objects.get(setpoint_address="G:MAG:SP"), 5.0)], title="safety")
    safety.kind = Snapshot.Kind.SAFETY
    safety.save()
    return Restore.objects.create(
        snapshot=snap, status=Restore.Status.COMPLETED, safety_snapshot=safety
    )


def _routes(machine) -> list[tuple[str, Any]]:
    """Every route that writes the machine, each with a fresh target per call."""
    snap = machine["snap"]
    owner = client_for(read=True, write=True, restore=True)

    def approved_free_plan() -> str:
        return _plan(owner, snap)["id"]

    def awaiting_plan() -> str:
        return _plan(client_for(read=True, write=True), snap)["id"]

    return [
        ("restore", lambda: f"/v1/snapshots/{snap.pk}/restore"),
        ("execute", lambda: f"/v1/restore-plans/{approved_free_plan()}/execute"),
        ("approve", lambda: f"/v1/restore-plans/{awaiting_plan()}/approve"),
        ("revert", lambda: f"/v1/restores/{_finished_restore(snap).pk}/revert"),
    ]


IDENTITIES = {
    "read key": dict(key=dict(read=True, write=False)),
    "write key": dict(key=dict(read=True, write=True)),
    "restore key": dict(key=dict(read=True, write=True, restore=True)),
    "restore-only key": dict(key=dict(read=True, write=False, restore=True)),
    "anonymous none": dict(anonymous="none"),
    "anonymous read": dict(anonymous="read"),
    "anonymous write": dict(anonymous="write"),
    "anonymous restore": dict(anonymous="restore"),
    "staff": dict(staff=False),
    "staff in Restorers": dict(staff=True),
}
MAY_RESTORE = {"restore key", "restore-only key", "anonymous restore", "staff in Restorers"}


@pytest.mark.parametrize("identity", list(IDENTITIES))
def test_scope_matrix_on_every_machine_writing_route(machine, settings, identity):
    spec = IDENTITIES[identity]
    settings.ANONYMOUS_ACCESS = spec.get("anonymous", "read")
    if "key" in spec:
        client = client_for(**spec["key"])
    elif "staff" in spec:
        client = staff_client(restorer=spec["staff"])
    else:
        client = APIClient()
    for route, url in _routes(machine):
        response = client.post(url(), {}, format="json")
        if identity in MAY_RESTORE:
            assert response.status_code == 200, (route, response.json())
            Restore.objects.filter(status=Restore.Status.PENDING).delete()  # claims released
        else:
            message = error(response, 401)
            assert message in (
                "API key does not have restore access",
                "Missing or deactivated API key",
                # a plan's execution takes write for an approved plan: a read key lacks both
                *(["API key does not have write access"] if route == "execute" else []),
            ), (route, message)
    # Reading stays as it was: the restore scope is about writing the machine only.
    if identity != "anonymous none":
        assert client.get("/v1/restores").status_code == 200


def test_write_no_longer_writes_the_machine_but_plans(machine, settings):
    settings.ANONYMOUS_ACCESS = "write"
    anonymous = APIClient()
    message = error(
        anonymous.post(f"/v1/snapshots/{machine['snap'].pk}/restore", {}, format="json"), 401
    )
    assert message == "Missing or deactivated API key"
    plan = _plan(anonymous, machine["snap"])  # a dry run is no write to the machine
    assert plan["approval"] == "awaiting-approval" and plan["executable"] is False
    message = error(
        client_for(read=True, write=True).post(
            f"/v1/snapshots/{machine['snap'].pk}/restore", {}, format="json"
        ),
        401,
    )
    assert message == "API key does not have restore access"


# --- approval -----------------------------------------------------------------------------------


def test_approval_flow(machine):
    script = client_for(read=True, write=True)
    operator = client_for(read=True, write=True, restore=True)
    plan = _plan(script, machine["snap"])
    assert (plan["approval"], plan["executable"], plan["approvedBy"]) == (
        "awaiting-approval",
        False,
        None,
    )
    execute = f"/v1/restore-plans/{plan['id']}/execute"
    approve = f"/v1/restore-plans/{plan['id']}/approve"
    assert "awaiting approval" in error(script.post(execute, {}, format="json"), 409)
    assert "awaiting approval" in error(operator.post(execute, {}, format="json"), 409)
    error(script.post(approve, {}, format="json"), 401)  # without the scope: no approval

    approved = payload(operator.post(approve, {}, format="json"))
    assert approved["approval"] == "approved" and approved["executable"] is True
    assert approved["approvedBy"].startswith("api-key:k-") and approved["approvedAt"]
    error(operator.post(approve, {}, format="json"), 409)  # approved already
    event = AuditEvent.objects.get(kind="restore_plan.approve")
    assert (event.actor, event.object_id) == (approved["approvedBy"], plan["id"])
    assert event.detail["approvedAt"] == approved["approvedAt"]
    assert event.detail["createdBy"] == plan["createdBy"]

    # Executable now by its maker, which has no restore scope.
    created = payload(script.post(execute, {"stopOnFailure": True}, format="json"))
    restore = Restore.objects.get(pk=created["restoreId"])
    assert restore.plan_id == uuid.UUID(plan["id"]) and restore.stop_on_failure
    assert restore.created_by == plan["createdBy"]


def test_approval_errors(machine):
    operator = client_for(read=True, write=True, restore=True)
    own = _plan(operator, machine["snap"])
    assert own["approval"] == "not-required" and own["executable"] is True
    message = error(operator.post(f"/v1/restore-plans/{own['id']}/approve", {}, format="json"), 409)
    assert "needs no approval" in message
    error(operator.post(f"/v1/restore-plans/{uuid.uuid4()}/approve", {}, format="json"), 404)
    error(operator.post("/v1/restore-plans/nope/approve", {}, format="json"), 404)
    # A plan made with the scope is not executable by a caller without it.
    body = error(
        client_for(read=True, write=True).post(
            f"/v1/restore-plans/{own['id']}/execute", {}, format="json"
        ),
        401,
    )
    assert body == "API key does not have restore access"
    bad = operator.post(
        f"/v1/restore-plans/{own['id']}/execute", {"stopOnFailure": "yes"}, format="json"
    )
    error(bad, 422)
    assert bad.json()["errors"][0]["loc"] == ["body", "stopOnFailure"]


# --- per-tag restore rights ----------------------------------------------------------------------


def _actions(plan_id: str) -> dict[str, str]:
    plan = RestorePlan.objects.get(pk=plan_id)
    return {n: ACTION_NAMES[a] for n, a in plan.items.values_list("pv_name", "action")}


def test_a_key_limited_to_tags_plans_the_rest_not_permitted(machine):
    limited = client_for(read=True, write=True, restore=True, restore_tag_ids=[machine["a"].pk])
    plan = _plan(limited, machine["snap"])
    assert _actions(plan["id"]) == {
        "G:MAG:SP": "write",
        "G:RF:SP": "write",
        "G:CRYO:SP": "skip-not-permitted",
    }
    assert plan["counts"]["skip-not-permitted"] == 1
    assert plan["permittedTagIds"] == [str(machine["a"].pk)]
    created = payload(limited.post(f"/v1/restore-plans/{plan['id']}/execute", {}, format="json"))
    restore = Restore.objects.get(pk=created["restoreId"])
    claimed = set(restore.claims.values_list("pv_id", flat=True))
    assert machine["cryo"].pk not in claimed  # never claimed, never written

    # A plain restore by it carries the limit to the worker's own plan.
    Restore.objects.all().delete()
    body = payload(limited.post(f"/v1/snapshots/{machine['snap'].pk}/restore", {}, format="json"))
    assert Restore.objects.get(pk=body["restoreId"]).permitted_tag_ids == [machine["a"].pk]


def test_limited_callers_cannot_execute_or_approve_writes_outside_their_tags(machine):
    everything = _plan(client_for(read=True, write=True, restore=True), machine["snap"])
    limited = client_for(read=True, write=True, restore=True, restore_tag_ids=[machine["b"].pk])
    message = error(
        limited.post(f"/v1/restore-plans/{everything['id']}/execute", {}, format="json"), 401
    )
    assert "2 of its writes are outside the tags" in message
    awaiting = _plan(client_for(read=True, write=True), machine["snap"])
    error(limited.post(f"/v1/restore-plans/{awaiting['id']}/approve", {}, format="json"), 401)
    staff = staff_client(restorer=True, tags=[machine["b"]])
    error(staff.post(f"/v1/restore-plans/{awaiting['id']}/approve", {}, format="json"), 401)
    own = _plan(staff, machine["snap"])
    assert own["counts"]["write"] == 1 and own["counts"]["skip-not-permitted"] == 2


# --- stages in plans -----------------------------------------------------------------------------


def test_plan_groups_its_writes_by_stage(machine):
    plan = _plan(client_for(read=True, write=True, restore=True), machine["snap"])
    assert plan["stages"] == [
        {"stage": 0, "total": 1, "write": 1},
        {"stage": 1, "total": 1, "write": 1},
        {"stage": 2, "total": 1, "write": 1},
    ]
    stored = RestorePlan.objects.get(pk=plan["id"])
    # ids follow the write order: stage, then completion timeout, then name
    in_id_order = list(stored.items.order_by("id").values_list("pv_name", "stage"))
    assert in_id_order == [("G:MAG:SP", 0), ("G:CRYO:SP", 1), ("G:RF:SP", 2)]
    response = client_for(read=True, write=False).get(f"/v1/restore-plans/{plan['id']}")
    body = json.loads(b"".join(response.streaming_content))
    assert response.status_code == 200 and body["errorCode"] == 0
    items = body["payload"]["items"]
    by_name = {i["pvName"]: i for i in items}
    assert by_name["G:CRYO:SP"]["stage"] == 1
    assert by_name["G:CRYO:SP"]["completionTimeout"] == 60.0
    assert by_name["G:MAG:SP"]["completionTimeout"] is None
    assert all(i["action"] == ACTION_NAMES[PlanAction.WRITE] for i in items)

"""GET /v1/audit and the writes it records (issue 18): catalog and tag edits (API, admin, CSV
import), API keys, restore plans, approvals and restore requests, each with its identity.
(Restore completion is checked against the sim IOC in tests/restore/test_stages_epics.py.)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from pvs.models import PV
from squirrel import audit
from squirrel.models import ApiKey, AuditEvent, UserRestoreLimit
from tags.models import Tag, TagGroup
from tests.conftest import error, make_key, payload
from tests.restore.conftest import cache_set, snapshot_make

pytestmark = [pytest.mark.django_db]


def keyed(name: str, **scopes: Any) -> APIClient:
    _, token = make_key(name, **scopes)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def events(client: APIClient, **query: Any) -> dict[str, Any]:
    return payload(client.get("/v1/audit", query))


def test_shape_order_paging_and_filters(read_client):
    for i in range(5):
        audit.record("cli:op" if i % 2 else "api-key:x", "pv.update", ("pv", f"id{i}"))
    audit.record("cli:op", "restore.request", ("restore", "r1"), detail={"n": 1})
    page = events(read_client, limit=2)
    assert set(page) == {"results", "totalCount", "limit", "offset"}
    assert (page["totalCount"], page["limit"], page["offset"]) == (6, 2, 0)
    first = page["results"][0]
    assert set(first) == {
        "id",
        "at",
        "actor",
        "kind",
        "objectType",
        "objectId",
        "summary",
        "before",
        "after",
        "detail",
    }
    assert (first["kind"], first["objectId"]) == ("restore.request", "r1")
    assert first["detail"] == {"n": 1}
    ids = [e["id"] for e in events(read_client, limit=100)["results"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert [e["objectId"] for e in events(read_client, limit=2, offset=1)["results"]] == [
        "id4",
        "id3",
    ]
    assert events(read_client, actor="cli:op")["totalCount"] == 3
    assert events(read_client, kind="pv.update")["totalCount"] == 5
    assert events(read_client, kind="restore.")["totalCount"] == 1  # a prefix
    assert events(read_client, objectType="pv", objectId="id2")["totalCount"] == 1
    at = AuditEvent.objects.order_by("id")[2].at.isoformat()
    assert events(read_client, since=at)["totalCount"] == 4
    assert events(read_client, until=at)["totalCount"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ],
)
def test_bad_queries_are_422(read_client, query, field):
    response = read_client.get("/v1/audit", query)
    error(response, 422)
    assert response.json()["errors"][0]["loc"] == ["query", field]


def test_needs_read_scope(api, settings):
    settings.ANONYMOUS_ACCESS = "none"
    error(api.get("/v1/audit"), 401)


def test_every_catalog_key_and_restore_write_is_recorded_with_its_identity(
    read_client, redis_client, tmp_path, settings
):
    writer = keyed("writer", read=True, write=True)
    admin = keyed("boss", read=True, write=True, admin=True, restore=True)
    group = payload(writer.post("/v1/tags", {"name": "Area"}, format="json"))
    group = payload(writer.post(f"/v1/tags/{group['id']}/tags", {"name": "LI20"}, format="json"))
    tag_id = group["tags"][0]["id"]
    pv = payload(
        writer.post("/v1/pvs", {"setpointAddress": "AU:SP", "tags": [tag_id]}, format="json")
    )
    payload(
        writer.put(
            f"/v1/pvs/{pv['id']}", {"description": "moved", "restoreStage": 1}, format="json"
        )
    )
    payload(
        writer.put("/v1/pvs/restore-policy", {"tagId": tag_id, "restoreStage": 2}, format="json")
    )
    payload(writer.put(f"/v1/tags/{group['id']}/tags/{tag_id}", {"name": "LI21"}, format="json"))
    key = payload(
        admin.post(
            "/v1/api-keys",
            {"appName": "script", "readAccess": True, "writeAccess": True},
            format="json",
        )
    )
    payload(admin.delete(f"/v1/api-keys/{key['id']}"))
    csv_file = tmp_path / "machine.csv"
    csv_file.write_text("Setpoint,RestoreStage,CompletionTimeout\nAU:CSV:SP,3,12.5\n")
    call_command("import_pvs", str(csv_file), "--no-progress")

    snap = snapshot_make([(PV.objects.get(setpoint_address="AU:SP"), 1.0)])
    cache_set(redis_client, {"AU:SP": 2.0})
    plan = payload(writer.post(f"/v1/snapshots/{snap.pk}/restore-plan", {}, format="json"))
    payload(admin.post(f"/v1/restore-plans/{plan['id']}/approve", {}, format="json"))
    restore = payload(writer.post(f"/v1/restore-plans/{plan['id']}/execute", {}, format="json"))
    payload(writer.delete(f"/v1/pvs/{PV.objects.get(setpoint_address='AU:CSV:SP').pk}"))
    settings.ANONYMOUS_ACCESS = "write"
    payload(APIClient().delete(f"/v1/tags/{group['id']}"))

    got = [(e["actor"], e["kind"]) for e in reversed(events(read_client, limit=100)["results"])]
    assert got == [
        ("api-key:writer", "taggroup.create"),
        ("api-key:writer", "tag.create"),
        ("api-key:writer", "pv.create"),
        ("api-key:writer", "pv.update"),
        ("api-key:writer", "pv.restore_policy"),
        ("api-key:writer", "tag.update"),
        ("api-key:boss", "apikey.create"),
        ("api-key:boss", "apikey.deactivate"),
        (audit.cli(), "pv.import"),
        ("api-key:writer", "restore_plan.create"),
        ("api-key:boss", "restore_plan.approve"),
        ("api-key:writer", "restore.request"),
        ("api-key:writer", "pv.delete"),
        ("anonymous", "taggroup.delete"),
    ]
    update = AuditEvent.objects.get(kind="pv.update")
    assert update.before == {"description": None, "restore_stage": 0}
    assert update.after == {"description": "moved", "restore_stage": 1}
    imported = AuditEvent.objects.get(kind="pv.import")
    assert imported.detail["file"] == "machine.csv" and imported.detail["created"] == 1
    policy = AuditEvent.objects.get(kind="pv.restore_policy")
    assert policy.detail["updated"] == 1 and policy.object_id == tag_id
    assert AuditEvent.objects.get(kind="restore.request").object_id == restore["restoreId"]
    created = AuditEvent.objects.get(kind="apikey.create")
    assert created.after["appName"] == "script" and "token" not in str(created.after)


def test_admin_edits_are_recorded_as_the_staff_user():
    user = get_user_model().objects.create_superuser("ann", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    group = TagGroup.objects.create(name="Area")
    tag = Tag.objects.create(group=group, name="LI20")
    pv = PV.objects.create(setpoint_address="AD:SP")
    response = client.post(
        f"/admin/pvs/pv/{pv.pk}/change/",
        {
            "setpoint_address": "AD:SP",
            "description": "moved",
            "abs_tolerance": "0.5",
            "rel_tolerance": "0",
            "restore_stage": "4",
            "completion_timeout": "30",
            "tags": [str(tag.pk)],
        },
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(kind="pv.update")
    assert event.actor == "user:ann"
    assert event.after == {
        "description": "moved",
        "abs_tolerance": 0.5,
        "restore_stage": 4,
        "completion_timeout": 30.0,
        "tags": [str(tag.pk)],
    }
    response = client.post(
        f"/admin/tags/taggroup/{group.pk}/change/",
        {
            "name": "Areas",
            "description": "",
            "tags-TOTAL_FORMS": "1",
            "tags-INITIAL_FORMS": "1",
            "tags-0-id": str(tag.pk),
            "tags-0-group": str(group.pk),
            "tags-0-name": "LI20",
            "tags-0-description": "",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    assert AuditEvent.objects.filter(kind="taggroup.update", actor="user:ann").exists()


def test_create_api_key_command_grants_restore(capsys):
    call_command("create_api_key", "ops", "--read", "--restore")
    out = capsys.readouterr()
    assert "restore" in out.err
    key = ApiKey.objects.get(app_name="ops")
    assert key.restore_access and not key.write_access and key.scope_letters == "rx"
    assert AuditEvent.objects.get(kind="apikey.create").actor.startswith("cli:")


def test_api_keys_carry_the_restore_scope(settings):
    admin = keyed("boss", read=True, write=True, admin=True)
    tag = Tag.objects.create(name="RF", group=TagGroup.objects.create(name="Systems"))
    body = payload(
        admin.post(
            "/v1/api-keys",
            {
                "appName": "restorer",
                "readAccess": True,
                "writeAccess": False,
                "restoreAccess": True,
                "restoreTagIds": [str(tag.pk)],
            },
            format="json",
        )
    )
    assert body["restoreAccess"] is True
    assert body["restoreTagIds"] == [str(tag.pk)]
    # A limit to a tag that does not exist would restore nothing of it: refused, no key made.
    missing = "7f8d5a4e-4d0c-4f43-9a53-0b1f8f4c6a11"
    unknown = admin.post(
        "/v1/api-keys",
        {"appName": "ghost", "readAccess": True, "writeAccess": False, "restoreAccess": True,
         "restoreTagIds": [str(tag.pk), missing]},
        format="json",
    )  # fmt: skip
    assert f"restoreTagIds: no tag has the id(s) {missing}" in error(unknown, 422)
    assert unknown.json()["errors"][0]["loc"] == ["body", "restoreTagIds"]
    assert not ApiKey.objects.filter(app_name="ghost").exists()
    limit = UserRestoreLimit(user=get_user_model().objects.create(username="op"), tag_ids=[missing])
    with pytest.raises(ValidationError, match="no tag has the id"):
        limit.full_clean()
    listed = {k["appName"]: k for k in payload(admin.get("/v1/api-keys"))}
    assert listed["boss"]["restoreAccess"] is False and listed["boss"]["restoreTagIds"] is None
    bad = admin.post(
        "/v1/api-keys",
        {"appName": "x", "readAccess": True, "writeAccess": False, "restoreTagIds": ["nope"]},
        format="json",
    )
    error(bad, 422)


def test_import_reads_and_export_writes_stage_columns(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("Setpoint,RestoreStage,CompletionTimeout\nCS:A,2,7.5\nCS:B,,\n")
    call_command("import_pvs", str(source), "--no-progress")
    a = PV.objects.get(setpoint_address="CS:A")
    b = PV.objects.get(setpoint_address="CS:B")
    assert (a.restore_stage, a.completion_timeout) == (2, 7.5)
    assert (b.restore_stage, b.completion_timeout) == (0, None)
    out = tmp_path / "out.csv"
    call_command("export_pvs", str(out))
    lines = Path(out).read_text().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(","), strict=False))
    assert (row["RestoreStage"], row["CompletionTimeout"]) == ("2", "7.5")
    bad = tmp_path / "bad.csv"
    bad.write_text("Setpoint,RestoreStage\nCS:C,-1\n")
    with pytest.raises(Exception, match="line 2, column 2 \\(RestoreStage\\)"):
        call_command("import_pvs", str(bad), "--no-progress")


def test_pv_restore_stage_and_timeout_through_the_api(write_client):
    pv = payload(
        write_client.post(
            "/v1/pvs",
            {"setpointAddress": "ST:A", "restoreStage": 3, "completionTimeout": 90},
            format="json",
        )
    )
    assert (pv["restoreStage"], pv["completionTimeout"]) == (3, 90.0)
    plain = payload(write_client.post("/v1/pvs", {"setpointAddress": "ST:B"}, format="json"))
    assert (plain["restoreStage"], plain["completionTimeout"]) == (0, None)
    changed = payload(write_client.put(f"/v1/pvs/{pv['id']}", {"restoreStage": 1}, format="json"))
    assert (changed["restoreStage"], changed["completionTimeout"]) == (1, 90.0)  # null: unchanged
    reset = payload(
        write_client.put(f"/v1/pvs/{pv['id']}", {"completionTimeout": 0}, format="json")
    )
    assert reset["completionTimeout"] is None  # 0: back to the default
    bad = (({"restoreStage": -1}, "restoreStage"), ({"completionTimeout": -2}, "completionTimeout"))
    for body, field in bad:
        response = write_client.put(f"/v1/pvs/{pv['id']}", body, format="json")
        error(response, 422)
        assert response.json()["errors"][0]["loc"] == ["body", field]


def test_restore_policy_of_a_tag(write_client):
    group = TagGroup.objects.create(name="Sys")
    rf = Tag.objects.create(group=group, name="RF")
    other = Tag.objects.create(group=group, name="X")
    a = PV.objects.create(setpoint_address="RP:A")
    b = PV.objects.create(setpoint_address="RP:B", restore_stage=2)
    c = PV.objects.create(setpoint_address="RP:C")
    a.tags.add(rf)
    b.tags.add(rf)
    c.tags.add(other)
    url = "/v1/pvs/restore-policy"
    body = {"tagId": str(rf.pk), "restoreStage": 2, "completionTimeout": 600}
    answer = payload(write_client.put(url, body, format="json"))
    assert answer == {"tagId": str(rf.pk), "updated": 2}
    assert payload(write_client.put(url, body, format="json"))["updated"] == 0  # already so
    pvs = PV.objects.order_by("setpoint_address")
    assert [(p.restore_stage, p.completion_timeout) for p in pvs] == [
        (2, 600.0),
        (2, 600.0),
        (0, None),
    ]
    unknown = {"tagId": str(uuid.uuid4()), "restoreStage": 1}
    error(write_client.put(url, unknown, format="json"), 404)
    error(write_client.put(url, {"tagId": str(rf.pk)}, format="json"), 422)
    error(write_client.put(url, {"tagId": "nope", "restoreStage": 1}, format="json"), 422)
    error(write_client.put(url, {"tagId": str(rf.pk), "restoreStage": -1}, format="json"), 422)
    read_only = keyed("reader2", read=True, write=False)
    error(read_only.put(url, body, format="json"), 401)

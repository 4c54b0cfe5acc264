"""POST /v1/snapshots, compare routes and export: contract shapes and errors in the envelope."""

from __future__ import annotations

import time
import uuid

import pytest

from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots.models import Snapshot
from tests.conftest import error, payload

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def cached_catalog(db, redis_client, monitor_heartbeat):
    PV.objects.create(setpoint_address="API:A:SP", readback_address="API:A:RBV")
    PV.objects.create(setpoint_address="API:B:SP")
    now = time.time()
    entries = {
        "API:A:SP": {"value": 1.0, "connected": True, "updated_at": now, "severity": 0},
        "API:A:RBV": {"value": 1.1, "connected": True, "updated_at": now, "severity": 0},
        "API:B:SP": {"value": "x", "connected": True, "updated_at": now, "severity": 0},
    }
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in entries.items()})


def test_post_async_queues_a_committed_job(
    write_client, cached_catalog, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = write_client.post(
            "/v1/snapshots?async=true", {"title": "T", "comment": "C"}, format="json"
        )
    body = payload(response)
    assert set(body) == {"jobId", "message"}
    assert body["message"] == "Snapshot creation queued for 'T' (from cache)"
    job = Job.objects.get(pk=body["jobId"])
    assert job.status == Job.Status.PENDING and job.type == Job.Type.SNAPSHOT_CREATE
    assert job.job_data["description"] == "C" and job.job_data["use_cache"] is True
    assert job.created_by == "api-key:writer"
    assert len(callbacks) == 1


def test_post_default_is_async_and_use_cache_false_says_so(
    write_client, db, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = write_client.post(
            "/v1/snapshots?use_cache=false", {"title": "D", "description": "d"}, format="json"
        )
    body = payload(response)
    assert body["message"] == "Snapshot creation queued for 'D' (direct EPICS)"
    assert Job.objects.get(pk=body["jobId"]).job_data["use_cache"] is False


def test_post_sync_returns_summary(write_client, cached_catalog):
    response = write_client.post(
        "/v1/snapshots?async=false", {"title": "S", "comment": "c"}, format="json"
    )
    body = payload(response)
    assert {"id", "title", "comment", "description", "createdDate", "createdBy", "pvCount"} <= set(
        body
    )
    assert (body["title"], body["comment"], body["description"], body["pvCount"]) == (
        "S",
        "c",
        "c",
        2,
    )
    assert (body["liveCount"], body["failedCount"]) == (3, 0)
    assert Snapshot.objects.filter(pk=body["id"]).exists()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 256},
        {"title": 5},
        {"title": "t", "comment": 3},
    ],
)
def test_post_invalid_body_is_422_and_writes_nothing(write_client, db, body):
    error(write_client.post("/v1/snapshots", body, format="json"), 422)
    assert Job.objects.count() == 0 and Snapshot.objects.count() == 0


def test_post_bad_query_and_json_are_422(write_client, db):
    error(write_client.post("/v1/snapshots?async=maybe", {"title": "t"}, format="json"), 422)
    error(write_client.post("/v1/snapshots", "[1,2]", content_type="application/json"), 422)
    error(write_client.post("/v1/snapshots", "{bad", content_type="application/json"), 422)
    assert Job.objects.count() == 0


def test_post_needs_write_scope(read_client, db, settings):
    settings.ANONYMOUS_ACCESS = "read"
    assert "write access" in error(
        read_client.post("/v1/snapshots", {"title": "t"}, format="json"), 401
    )
    from rest_framework.test import APIClient

    error(APIClient().post("/v1/snapshots", {"title": "t"}, format="json"), 401)


def test_compare_routes(read_client, write_client, cached_catalog):
    s1 = payload(write_client.post("/v1/snapshots?async=false", {"title": "a"}, format="json"))
    s2 = payload(write_client.post("/v1/snapshots?async=false", {"title": "b"}, format="json"))
    body = payload(read_client.get(f"/v1/snapshots/{s1['id']}/compare/{s2['id']}"))
    assert {"snapshot1Id", "snapshot2Id", "differences", "matchCount", "differenceCount"} <= set(
        body
    )
    assert (body["matchCount"], body["differenceCount"], body["differences"]) == (2, 0, [])
    body = payload(
        read_client.get(f"/v1/snapshots/{s1['id']}/compare/{s2['id']}?onlyDifferent=false")
    )
    assert len(body["differences"]) == 2
    live = payload(read_client.get(f"/v1/snapshots/{s1['id']}/compare/live"))
    assert live["snapshot2Id"] == "live" and live["matchCount"] == 2
    missing = str(uuid.uuid4())
    assert error(read_client.get(f"/v1/snapshots/{s1['id']}/compare/{missing}"), 404) == (
        f"Snapshot {missing} not found"
    )
    error(read_client.get(f"/v1/snapshots/not-a-uuid/compare/{s1['id']}"), 404)
    error(read_client.get("/v1/snapshots/not-a-uuid/compare/live"), 404)
    error(read_client.get(f"/v1/snapshots/{s1['id']}/compare/live?quality=nope"), 422)
    error(read_client.get(f"/v1/snapshots/{s1['id']}/compare/live?onlyDifferent=perhaps"), 422)


def test_post_through_the_project_route(write_client, cached_catalog):
    """The project's /v1/snapshots route dispatches POST to the capture view."""
    body = payload(write_client.post("/v1/snapshots?async=false", {"title": "R"}, format="json"))
    assert body["title"] == "R" and body["pvCount"] == 2
    listed = payload(write_client.get("/v1/snapshots"))
    assert [s["id"] for s in listed] == [body["id"]]


# --- found by the schemathesis fuzz (tests/fuzz): bad input is a 4xx, never a 5xx -----------


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        ("async=true", {"title": "a\x00b"}, "title"),  # JSONB refuses \u0000 (job data)
        ("async=false", {"title": "a\x00b"}, "title"),  # text columns refuse NUL
        ("async=true", {"title": "t", "comment": "\x00"}, "comment"),
        ("async=false", {"title": "t", "description": "x\x00"}, "description"),
    ],
)
def test_post_nul_characters_are_422_not_503(write_client, quiet_epics, db, query, body, field):
    message = error(write_client.post(f"/v1/snapshots?{query}", body, format="json"), 422)
    assert message == f"Validation error: {field}: Null characters are not allowed."
    assert Job.objects.count() == 0 and Snapshot.objects.count() == 0


def test_compare_tag_filter_must_be_uuids(read_client, write_client, cached_catalog):
    snap = payload(write_client.post("/v1/snapshots?async=false", {"title": "a"}, format="json"))
    for path in (f"{snap['id']}/compare/live", f"{snap['id']}/compare/{snap['id']}"):
        url = f"/v1/snapshots/{path}?onlyDifferent=false&tags="
        message = error(read_client.get(url + "nope"), 422)
        assert message == "Validation error: tags: 'nope' is not a valid UUID"
        unknown = str(uuid.uuid4()).upper()  # any spelling of a UUID is one; nobody has it
        assert payload(read_client.get(url + unknown))["differences"] == []
        assert len(payload(read_client.get(url))["differences"]) == 2  # blank: no filter

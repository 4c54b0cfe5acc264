"""GET/PUT/DELETE /v1/snapshots[/{id}] (contract §2.2, §2.4) with values seeded through COPY."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from monitor import values
from pvs.models import PV
from snapshots.models import Snapshot, SnapshotValue, ValueSource
from tags.models import Tag, TagGroup
from tests.conftest import error, payload
from tests.snapshots.factories import NOW, captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db

SUMMARY_KEYS = {
    "id", "title", "comment", "description", "createdDate", "createdBy", "pvCount",
    "liveCount", "staleCount", "rereadCount", "failedCount", "kind", "labels", "scheduleId",
    "selection",
}  # fmt: skip
VALUE_KEYS = {
    "pvId", "pvName", "setpointName", "readbackName", "setpointValue", "readbackValue",
    "status", "severity", "timestamp", "tags",
}  # fmt: skip
EPICS_KEYS = {
    "value", "status", "severity", "timestamp", "units", "precision", "upper_ctrl_limit",
    "lower_ctrl_limit", "label", "source", "age", "connected", "error",
}  # fmt: skip
NOW_ISO = "2026-01-27T23:03:20.250000+00:00"


def _pv(sp: str | None, rb: str | None = None, tags=()) -> PV:
    pv = PV.objects.create(setpoint_address=sp, readback_address=rb)
    if tags:
        pv.tags.set(tags)
    return pv


@pytest.fixture
def seeded():
    """A snapshot with every kind of value; PVs tagged; one PV deleted afterwards."""
    area = TagGroup.objects.create(name="Area")
    linac = Tag.objects.create(name="Linac", group=area)
    bsy = Tag.objects.create(name="BSY", group=area)
    meta = {"units": "mA", "precision": 3, "upper_ctrl_limit": 10.0, "lower_ctrl_limit": -10.0}
    pvs = {
        "float": _pv("B:FLOAT", "B:FLOAT:RBV", tags=[linac, bsy]),
        "enum": _pv("B:ENUM", tags=[linac]),
        "str": _pv("B:STR"),
        "wave": _pv("B:WAVE"),
        "nan": _pv("B:NAN"),
        "failed": _pv("B:FAILED"),
        "ro": _pv(None, "B:RO:RBV"),
        "gone": _pv("A:GONE"),
    }
    rows = [
        captured(pvs["float"], entry(1.5, **meta), entry(1.25, **meta, status=3, severity=2)),
        captured(pvs["enum"], entry("On", index=1, enum_strs=["Off", "On"])),
        captured(pvs["str"], entry("hello")),
        captured(pvs["wave"], entry([1, 2, 3])),
        captured(pvs["nan"], entry(float("nan"))),
        captured(
            pvs["failed"],
            {"value": None, "connected": False, "error": "No answer from Channel Access"},
            source=ValueSource.DIRECT,
        ),
        captured(pvs["ro"], None, entry(0.5, status=17, severity=3)),
        captured(pvs["gone"], entry(2.0)),
    ]
    snap = snapshot_seed("seeded", rows, description="a comment", live_count=7, failed_count=1)
    pvs["gone"].delete()
    return snap, pvs, {"linac": linac, "bsy": bsy}


def _side(value, *, label=None, units=None, precision=None, upper=None, lower=None, **kw):
    out = {
        "value": value,
        "label": label,
        "status": 0,
        "severity": 0,
        "timestamp": NOW_ISO,
        "units": units,
        "precision": precision,
        "upper_ctrl_limit": upper,
        "lower_ctrl_limit": lower,
        "source": "cache",
        "age": 0.5,
        "connected": True,
        "error": None,
    }
    out.update(kw)
    return out


def _row(pv_id, name, sp_name, rb_name, sp, rb, tags=(), *, level=None):
    level = level or sp or rb
    return {
        "pvId": str(pv_id) if pv_id else None,
        "pvName": name,
        "setpointName": sp_name,
        "readbackName": rb_name,
        "setpointValue": sp,
        "readbackValue": rb,
        "status": level["status"] if level else None,
        "severity": level["severity"] if level else None,
        "timestamp": level["timestamp"] if level else None,
        "tags": list(tags),
    }


def test_detail_streams_exactly_the_expected_json(api, seeded):
    snap, pvs, tags = seeded
    meta = {"units": "mA", "precision": 3, "upper": 10.0, "lower": -10.0}
    linac = {"id": str(tags["linac"].pk), "name": "Linac", "groupName": "Area"}
    bsy = {"id": str(tags["bsy"].pk), "name": "BSY", "groupName": "Area"}
    expected_values = [
        _row(None, "A:GONE", None, None, _side(2.0), None),
        _row(pvs["enum"].pk, "B:ENUM", "B:ENUM", None, _side(1, label="On"), None, [linac]),
        _row(
            pvs["failed"].pk,
            "B:FAILED",
            "B:FAILED",
            None,
            _side(
                None,
                status=None,
                severity=None,
                timestamp=None,
                source="direct",
                connected=False,
                error="No answer from Channel Access",
            ),
            None,
        ),
        _row(
            pvs["float"].pk,
            "B:FLOAT",
            "B:FLOAT",
            "B:FLOAT:RBV",
            _side(1.5, **meta),
            _side(1.25, **meta, status=3, severity=2, age=0.25),
            [bsy, linac],
        ),
        _row(pvs["nan"].pk, "B:NAN", "B:NAN", None, _side(None, error=values.NON_FINITE), None),
        _row(
            pvs["ro"].pk,
            "B:RO:RBV",
            None,
            "B:RO:RBV",
            None,
            _side(0.5, status=17, severity=3, age=0.25),
        ),
        _row(pvs["str"].pk, "B:STR", "B:STR", None, _side("hello"), None),
        _row(pvs["wave"].pk, "B:WAVE", "B:WAVE", None, _side([1, 2, 3]), None),
    ]
    response = api.get(f"/v1/snapshots/{snap.pk}")
    assert response.streaming
    assert response["Content-Type"] == "application/json"
    body = json.loads(b"".join(response.streaming_content))
    assert set(body) == {"errorCode", "errorMessage", "payload"}
    assert body["errorCode"] == 0 and body["errorMessage"] is None
    got = body["payload"]
    assert set(got) == SUMMARY_KEYS | {"pvValues"}
    assert {k: got[k] for k in ("title", "comment", "description", "pvCount")} == {
        "title": "seeded",
        "comment": "a comment",
        "description": "a comment",
        "pvCount": 8,
    }
    assert (got["liveCount"], got["failedCount"], got["kind"]) == (7, 1, "snapshot")
    assert got["createdDate"] == snap.created_at.isoformat()
    for row in got["pvValues"]:
        assert set(row) == VALUE_KEYS
        for side in (row["setpointValue"], row["readbackValue"]):
            assert side is None or set(side) == EPICS_KEYS
    assert got["pvValues"] == expected_values
    # the enum's contract value is the integer index (as CA returns it)
    assert type(got["pvValues"][1]["setpointValue"]["value"]) is int


def test_detail_limit_offset_and_full_pv_count(api, seeded):
    snap, _, _ = seeded
    full = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}").streaming_content))
    names = [r["pvName"] for r in full["payload"]["pvValues"]]
    assert names == sorted(names)
    response = api.get(f"/v1/snapshots/{snap.pk}?limit=3&offset=2")
    got = json.loads(b"".join(response.streaming_content))["payload"]
    assert [r["pvName"] for r in got["pvValues"]] == names[2:5]
    assert got["pvValues"] == full["payload"]["pvValues"][2:5]  # tags looked up per row too
    assert got["pvValues"][1]["tags"]  # B:FLOAT carries two tags
    assert got["pvCount"] == 8
    got = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}?offset=7").streaming_content))
    assert [r["pvName"] for r in got["payload"]["pvValues"]] == names[7:]
    got = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}?limit=0").streaming_content))
    assert got["payload"]["pvValues"] == [] and got["payload"]["pvCount"] == 8


@pytest.mark.parametrize("query", ["limit=-1", "limit=x", "offset=-3", "offset=1.5"])
def test_detail_invalid_limit_offset_is_422(api, seeded, query):
    snap, _, _ = seeded
    assert "Validation error" in error(api.get(f"/v1/snapshots/{snap.pk}?{query}"), 422)


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4()), "1234"])
def test_unknown_or_malformed_id_is_404(write_client, bad):
    assert error(write_client.get(f"/v1/snapshots/{bad}"), 404) == f"Snapshot {bad} not found"
    assert error(write_client.put(f"/v1/snapshots/{bad}", {"title": "x"}, format="json"), 404)
    assert error(write_client.delete(f"/v1/snapshots/{bad}"), 404)


def test_detail_query_count_does_not_grow_with_values(api, seeded):
    """The values come from one streamed query: 8 values or 500 cost the same queries."""
    snap, _, _ = seeded
    pvs = PV.objects.bulk_create(PV(setpoint_address=f"Q:{i:03d}") for i in range(500))
    big = snapshot_seed("big", [captured(pv, entry(1.0)) for pv in pvs])

    def queries(snapshot):
        with CaptureQueriesContext(connection) as ctx:
            body = b"".join(api.get(f"/v1/snapshots/{snapshot.pk}").streaming_content)
        return len(ctx.captured_queries), len(json.loads(body)["payload"]["pvValues"])

    small_count, small_rows = queries(snap)
    big_count, big_rows = queries(big)
    assert (small_rows, big_rows) == (8, 500)
    assert small_count == big_count <= 3


def test_values_survive_pv_deletion_with_null_id_and_names(api, seeded):
    snap, _, _ = seeded
    assert SnapshotValue.objects.filter(snapshot=snap, pv__isnull=True).count() == 1
    got = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}").streaming_content))["payload"]
    gone = got["pvValues"][0]
    assert (gone["pvId"], gone["pvName"], gone["setpointName"], gone["tags"]) == (
        None,
        "A:GONE",
        None,
        [],
    )
    assert gone["setpointValue"]["value"] == 2.0


def test_names_and_tags_are_the_pvs_current_ones(api, seeded):
    snap, pvs, tags = seeded
    PV.objects.filter(pk=pvs["float"].pk).update(readback_address="B:FLOAT:NEW")
    pvs["float"].tags.set([tags["bsy"]])
    got = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}").streaming_content))["payload"]
    row = next(r for r in got["pvValues"] if r["pvName"] == "B:FLOAT")
    assert row["readbackName"] == "B:FLOAT:NEW"
    assert [t["name"] for t in row["tags"]] == ["BSY"]


# --- list ------------------------------------------------------------------------------------


def test_list_shape_newest_first_default_100(api):
    for i in range(103):
        Snapshot.objects.create(title=f"s{i:03d}", pv_count=i)
    got = payload(api.get("/v1/snapshots"))
    assert len(got) == 100
    assert all(set(s) == SUMMARY_KEYS for s in got)
    assert [s["title"] for s in got[:3]] == ["s102", "s101", "s100"]
    assert got[0]["pvCount"] == 102
    more = payload(api.get("/v1/snapshots?limit=5&offset=100"))
    assert [s["title"] for s in more] == ["s002", "s001", "s000"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=a", "offset=-1", "tags=nope"])
def test_list_invalid_query_is_422(api, query):
    assert "Validation error" in error(api.get(f"/v1/snapshots?{query}"), 422)


def test_list_filters_title_and_current_tags(api, seeded):
    snap, pvs, tags = seeded
    other_tag = Tag.objects.create(name="Other", group=TagGroup.objects.create(name="G2"))
    plain = snapshot_seed("Plain TITLE", [captured(pvs["str"], entry("x"))])
    assert [s["id"] for s in payload(api.get("/v1/snapshots?title=title"))] == [str(plain.pk)]
    by_tag = payload(api.get(f"/v1/snapshots?tags={tags['bsy'].pk}&tags={other_tag.pk}"))
    assert [s["id"] for s in by_tag] == [str(snap.pk)]
    assert payload(api.get(f"/v1/snapshots?tags={other_tag.pk}")) == []
    pvs["str"].tags.set([other_tag])  # tags are looked up as they are NOW
    by_tag = payload(api.get(f"/v1/snapshots?tags={other_tag.pk}"))
    assert {s["id"] for s in by_tag} == {str(snap.pk), str(plain.pk)}
    assert payload(api.get("/v1/snapshots?kind=safety")) == []


def test_list_query_count_is_constant(api, django_assert_num_queries):
    for i in range(20):
        Snapshot.objects.create(title=f"s{i}")
    with django_assert_num_queries(1):
        assert len(payload(api.get("/v1/snapshots"))) == 20


# --- edit and delete -------------------------------------------------------------------------


def test_put_changes_title_and_description_null_means_unchanged(write_client, seeded):
    snap, _, _ = seeded
    got = payload(write_client.put(f"/v1/snapshots/{snap.pk}", {"title": "New"}, format="json"))
    assert set(got) == SUMMARY_KEYS
    assert (got["title"], got["comment"], got["description"]) == ("New", "a comment", "a comment")
    got = payload(
        write_client.put(
            f"/v1/snapshots/{snap.pk}", {"title": None, "description": "d2"}, format="json"
        )
    )
    assert (got["title"], got["description"], got["comment"]) == ("New", "d2", "d2")
    got = payload(write_client.put(f"/v1/snapshots/{snap.pk}", {"comment": "c3"}, format="json"))
    assert got["description"] == "c3"
    both = {"comment": "c4", "description": "d4"}  # description wins, as on HEAD
    assert (
        payload(write_client.put(f"/v1/snapshots/{snap.pk}", both, format="json"))["comment"]
        == "d4"
    )
    got = payload(write_client.put(f"/v1/snapshots/{snap.pk}", {"comment": "c3"}, format="json"))
    snap.refresh_from_db()
    assert (snap.title, snap.description) == ("New", "c3")


@pytest.mark.parametrize(
    "body", [{"title": ""}, {"title": "x" * 256}, {"title": 5 * [1]}, [1], {"description": 3.5j}]
)
def test_put_invalid_is_422_and_changes_nothing(write_client, seeded, body):
    snap, _, _ = seeded
    if body == {"description": 3.5j}:
        response = write_client.put(
            f"/v1/snapshots/{snap.pk}", '{"description": {"a": 1}}', content_type="application/json"
        )
    else:
        response = write_client.put(f"/v1/snapshots/{snap.pk}", body, format="json")
    error(response, 422)
    snap.refresh_from_db()
    assert (snap.title, snap.description) == ("seeded", "a comment")


def test_put_malformed_json_is_a_clear_4xx(write_client, seeded):
    snap, _, _ = seeded
    response = write_client.put(
        f"/v1/snapshots/{snap.pk}", "{not json", content_type="application/json"
    )
    error(response, 422)


def test_delete_removes_snapshot_and_values_keeps_pvs(write_client, seeded):
    snap, _, _ = seeded
    assert payload(write_client.delete(f"/v1/snapshots/{snap.pk}?deleteData=false")) is True
    assert not Snapshot.objects.filter(pk=snap.pk).exists()
    assert not SnapshotValue.objects.filter(snapshot_id=snap.pk).exists()
    assert PV.objects.filter(setpoint_address="B:FLOAT").exists()
    error(write_client.delete(f"/v1/snapshots/{snap.pk}"), 404)


def test_writes_need_write_scope(read_client, seeded, settings):
    snap, _, _ = seeded
    assert "write access" in error(read_client.delete(f"/v1/snapshots/{snap.pk}"), 401)
    assert "write access" in error(
        read_client.put(f"/v1/snapshots/{snap.pk}", {"title": "x"}, format="json"), 401
    )
    assert Snapshot.objects.filter(pk=snap.pk, title="seeded").exists()
    settings.ANONYMOUS_ACCESS = "none"
    from rest_framework.test import APIClient

    error(APIClient().get("/v1/snapshots"), 401)
    assert payload(read_client.get("/v1/snapshots"))


def test_timestamps_are_utc_iso_with_offset(api, seeded):
    snap, _, _ = seeded
    got = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}").streaming_content))["payload"]
    assert got["createdDate"].endswith("+00:00")
    row = next(r for r in got["pvValues"] if r["pvName"] == "B:FLOAT")
    assert row["timestamp"] == NOW_ISO == row["setpointValue"]["timestamp"]
    assert datetime.fromisoformat(NOW_ISO).timestamp() == NOW


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_detail_under_asgi_streams_asynchronously():
    """Under ASGI the body is an async iterator (Django would otherwise collect a sync one
    into a list, holding every row at once) and carries the same JSON."""
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    def seed():
        pvs = PV.objects.bulk_create(PV(setpoint_address=f"AS:{i:04d}") for i in range(3000))
        return snapshot_seed("asgi", [captured(pv, entry(float(i))) for i, pv in enumerate(pvs)])

    snap = await sync_to_async(seed)()
    try:
        response = await AsyncClient().get(f"/v1/snapshots/{snap.pk}")
        assert response.status_code == 200
        assert response.is_async
        chunks = [chunk async for chunk in response.streaming_content]
    finally:  # the sync thread's connection (the test client skips request_finished)
        await sync_to_async(connections.close_all)()
    assert len(chunks) > 2  # streamed in pieces, not one body
    body = json.loads(b"".join(chunks))
    rows = body["payload"]["pvValues"]
    assert [r["pvName"] for r in rows] == [f"AS:{i:04d}" for i in range(3000)]
    assert rows[7]["setpointValue"]["value"] == 7.0


def test_post_on_the_list_route_reaches_capture(read_client, write_client):
    """POST /v1/snapshots is dispatched to the capture view (write scope, its validation)."""
    assert "write access" in error(read_client.post("/v1/snapshots", {}, format="json"), 401)
    error(write_client.post("/v1/snapshots", {"comment": "no title"}, format="json"), 422)
    assert not Snapshot.objects.exists()


def test_bare_bodies_without_the_envelope(api, seeded, settings):
    snap, _, _ = seeded
    settings.API_ENVELOPE = False
    body = json.loads(b"".join(api.get(f"/v1/snapshots/{snap.pk}").streaming_content))
    assert set(body) == SUMMARY_KEYS | {"pvValues"} and len(body["pvValues"]) == 8
    listed = api.get("/v1/snapshots").json()
    assert [s["id"] for s in listed] == [str(snap.pk)]
    missing = api.get("/v1/snapshots/x")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Snapshot x not found"})


# --- found by the schemathesis fuzz (tests/fuzz): bad input is a 4xx, never a 5xx -----------

PAST_BIGINT = 35717090318346461184  # the fuzzer's offset: PostgreSQL refused it (503)


@pytest.mark.parametrize("query", [f"offset={PAST_BIGINT}", f"offset={2**31}"])
def test_list_offset_past_the_database_range_is_422(api, query):
    assert "offset" in error(api.get(f"/v1/snapshots?{query}"), 422)
    assert payload(api.get(f"/v1/snapshots?offset={2**31 - 1}")) == []


@pytest.mark.parametrize("query", [f"offset={PAST_BIGINT}", f"limit={PAST_BIGINT}"])
def test_detail_limit_offset_past_the_database_range_is_422(api, seeded, query):
    # checked before the 200 starts streaming: a database error mid-stream cannot be an error
    snap, _, _ = seeded
    assert "Validation error" in error(api.get(f"/v1/snapshots/{snap.pk}?{query}"), 422)


def test_list_filter_errors_read_as_messages(api):
    body = api.get("/v1/snapshots?title=a%00b").json()
    assert body["errorMessage"] == "Validation error: title: Null characters are not allowed."
    assert body["errors"] == [
        {
            "loc": ["query", "title"],
            "msg": "Null characters are not allowed.",
            "type": "null_characters_not_allowed",
        }
    ]

"""The /v1/pvs catalog routes (contract §2.3): exact shapes, paging, filters, errors, scopes."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from urllib.parse import quote

import pytest

from monitor.events import values_hash
from monitor.values import pack
from pvs.models import PV
from snapshots.models import Snapshot, SnapshotValue
from tests.conftest import error, payload
from tests.pvs.factories import PVFactory
from tests.tags.factories import TagFactory

pytestmark = pytest.mark.django_db

PV_KEYS = {
    "id",
    "setpointAddress",
    "readbackAddress",
    "configAddress",
    "device",
    "description",
    "absTolerance",
    "relTolerance",
    "readOnly",
    "restoreStage",
    "completionTimeout",
    "tags",
    "createdDate",
    "lastModifiedDate",
    "createdBy",
    "lastModifiedBy",
}


def test_pv_dto_exact_shape(read_client):
    tag = TagFactory(name="LI22", description="linac")
    pv = PVFactory(
        setpoint_address="A:SP",
        readback_address="A:RB",
        device="A",
        description="d",
        abs_tolerance=0.5,
        tags=[tag],
    )
    (dto,) = payload(read_client.get("/v1/pvs"))
    assert set(dto) == PV_KEYS
    assert dto == {
        "id": str(pv.pk),
        "setpointAddress": "A:SP",
        "readbackAddress": "A:RB",
        "configAddress": None,
        "device": "A",
        "description": "d",
        "absTolerance": 0.5,
        "relTolerance": 0.0,
        "readOnly": False,
        "restoreStage": 0,
        "completionTimeout": None,
        "tags": [{"id": str(tag.pk), "name": "LI22", "description": "linac"}],
        "createdDate": dto["createdDate"],
        "lastModifiedDate": dto["lastModifiedDate"],
        "createdBy": None,
        "lastModifiedBy": None,
    }
    # ISO 8601 with an offset, the stored instant exactly
    assert dto["createdDate"].endswith("+00:00")
    assert datetime.fromisoformat(dto["createdDate"]) == pv.created_at
    assert datetime.fromisoformat(dto["lastModifiedDate"]) == pv.updated_at


def test_list_filters_by_name_in_id_order(read_client, django_assert_max_num_queries):
    tag = TagFactory()
    for i in range(30):
        PVFactory(setpoint_address=f"MAG:{i}", tags=[tag])
    PVFactory(setpoint_address="OTHER", description="a magnet")
    PVFactory(setpoint_address="NOPE")
    with django_assert_max_num_queries(3):  # key, rows, tags
        body = payload(read_client.get("/v1/pvs?pvName=mag"))
    assert len(body) == 31
    assert [r["id"] for r in body] == sorted(r["id"] for r in body)
    assert len(payload(read_client.get("/v1/pvs?pvName="))) == 32


def _walk(client, query: str = "", size: int = 100) -> tuple[list[dict], list[int]]:
    rows: list[dict] = []
    totals: list[int] = []
    token = None
    while True:
        url = f"/v1/pvs/paged?pageSize={size}{query}"
        if token:
            url += f"&continuationToken={token}"
        page = payload(client.get(url))
        assert set(page) == {"results", "continuationToken", "totalCount"}
        assert len(page["results"]) <= size
        rows.extend(page["results"])
        totals.append(page["totalCount"])
        token = page["continuationToken"]
        if not token:
            return rows, totals
        assert token == page["results"][-1]["id"]


def test_paged_walks_every_row_once(read_client, django_assert_max_num_queries):
    PVFactory.create_batch(257)
    with django_assert_max_num_queries(4):  # key, count, rows, tags
        first = payload(read_client.get("/v1/pvs/paged?pvName=&pageSize=100"))
    assert len(first["results"]) == 100 and first["totalCount"] == 257
    rows, totals = _walk(read_client)
    ids = [r["id"] for r in rows]
    assert len(ids) == 257 and len(set(ids)) == 257
    assert set(ids) == {str(pk) for pk in PV.objects.values_list("pk", flat=True)}
    assert ids == sorted(ids, key=uuid.UUID)
    assert totals == [257, 257, 257]
    assert all(set(r) == PV_KEYS for r in rows)


def test_paged_exact_multiple_ends_with_null_token(read_client):
    PVFactory.create_batch(4)
    page = payload(read_client.get("/v1/pvs/paged?pageSize=2"))
    page = payload(
        read_client.get(f"/v1/pvs/paged?pageSize=2&continuationToken={page['continuationToken']}")
    )
    assert len(page["results"]) == 2 and page["continuationToken"] is None


def test_paged_empty_catalog(read_client):
    assert payload(read_client.get("/v1/pvs/paged")) == {
        "results": [],
        "continuationToken": None,
        "totalCount": 0,
    }


def test_paged_name_filter_over_five_columns(read_client):
    PVFactory(setpoint_address="X1", readback_address="foo:rbv")
    PVFactory(setpoint_address="X2", config_address="FOO:CFG")
    PVFactory(setpoint_address="X3", device="fOo")
    PVFactory(setpoint_address="X4", description="has Foo inside")
    PVFactory(setpoint_address="FOO")
    PVFactory(setpoint_address="BAR")
    rows, totals = _walk(read_client, "&pvName=foo", size=2)
    assert sorted(r["setpointAddress"] for r in rows) == ["FOO", "X1", "X2", "X3", "X4"]
    assert set(totals) == {5}


def test_paged_tag_filters_or_inside_and_across(read_client):
    a1, a2 = TagFactory(), TagFactory()
    b1 = TagFactory()
    only_a1 = PVFactory(tags=[a1])
    a2_b1 = PVFactory(tags=[a2, b1])
    a1_b1 = PVFactory(tags=[a1, b1])
    PVFactory(tags=[b1])
    PVFactory()

    def ids(filters) -> set[str]:
        rows, _ = _walk(read_client, "&tagFilters=" + quote(json.dumps(filters)), size=2)
        return {r["id"] for r in rows}

    ga, gb = str(a1.group_id), str(b1.group_id)
    assert ids({ga: [str(a1.pk), str(a2.pk)]}) == {str(p.pk) for p in (only_a1, a2_b1, a1_b1)}
    assert ids({ga: [str(a1.pk), str(a2.pk)], gb: [str(b1.pk)]}) == {
        str(a2_b1.pk),
        str(a1_b1.pk),
    }
    # empty lists and an empty object are ignored
    assert len(ids({ga: [], gb: []})) == 5
    assert len(ids({})) == 5
    # an unknown tag id matches nothing
    assert ids({ga: [str(uuid.uuid4())]}) == set()


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("tagFilters=%7Bnot-json", 400, "Invalid tagFilters JSON"),
        ("tagFilters=%5B1%2C2%5D", 400, "Invalid tagFilters JSON"),
        ("tagFilters=%7B%22g%22%3A%22x%22%7D", 400, "Invalid tagFilters JSON"),
        ("tagFilters=%7B%22g%22%3A%5B%22x%22%5D%7D", 400, "Invalid tagFilters JSON"),
        ("continuationToken=not-a-uuid", 400, "continuationToken"),
        ("pageSize=0", 422, "pageSize"),
        ("pageSize=1001", 422, "pageSize"),
        ("pageSize=ten", 422, "pageSize"),
    ],
)
def test_paged_bad_queries(read_client, query, status, text):
    PVFactory()
    assert text in error(read_client.get(f"/v1/pvs/paged?{query}"), status)


def test_paged_page_size_bounds_accepted(read_client):
    PVFactory.create_batch(3)
    assert len(payload(read_client.get("/v1/pvs/paged?pageSize=1"))["results"]) == 1
    assert len(payload(read_client.get("/v1/pvs/paged?pageSize=1000"))["results"]) == 3


def test_create_pv(write_client, django_capture_on_commit_callbacks, redis_client):
    from monitor.events import catalog_version_key

    tag = TagFactory()
    body = {
        "setpointAddress": "  NEW:SP ",
        "readbackAddress": "",
        "description": " keep spaces ",
        "absTolerance": 0.1,
        "tags": [str(tag.pk)],
        "unknownField": 1,
    }
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        dto = payload(write_client.post("/v1/pvs", body, "json"))
    assert len(callbacks) == 1
    assert redis_client.get(catalog_version_key()) == b"1"
    assert set(dto) == PV_KEYS
    assert dto["setpointAddress"] == "NEW:SP" and dto["readbackAddress"] is None
    assert dto["description"] == " keep spaces "
    assert dto["absTolerance"] == 0.1 and dto["relTolerance"] == 0.0
    assert dto["tags"] == [{"id": str(tag.pk), "name": tag.name, "description": None}]
    assert PV.objects.get(pk=dto["id"]).setpoint_address == "NEW:SP"


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({}, 422, "At least one address"),
        ({"setpointAddress": "", "readbackAddress": None}, 422, "At least one address"),
        ({"setpointAddress": "   "}, 409, "At least one address"),
        ({"setpointAddress": "A", "absTolerance": None}, 422, "absTolerance"),
        ({"setpointAddress": "A", "relTolerance": -1}, 422, "relTolerance"),
        ({"setpointAddress": "A", "absTolerance": "x"}, 422, "absTolerance"),
        ({"setpointAddress": "A", "tags": None}, 422, "tags"),
        ({"setpointAddress": "A", "tags": ["not-a-uuid"]}, 422, "tags"),
        ({"setpointAddress": "A", "tags": [str(uuid.uuid4())]}, 409, "tag IDs are invalid"),
        ({"setpointAddress": "A" * 256}, 422, "setpointAddress"),
        ([{"setpointAddress": "A"}], 422, ""),
    ],
)
def test_create_pv_errors(write_client, body, status, text):
    assert text in error(write_client.post("/v1/pvs", body, "json"), status)
    assert not PV.objects.exists()


def test_create_duplicate_setpoint_is_409(write_client):
    PVFactory(setpoint_address="DUP")
    message = error(write_client.post("/v1/pvs", {"setpointAddress": "DUP"}, "json"), 409)
    assert message == "PV with setpoint address 'DUP' already exists"
    # readback may repeat
    payload(write_client.post("/v1/pvs", {"readbackAddress": "DUP"}, "json"))
    payload(write_client.post("/v1/pvs", {"readbackAddress": "DUP"}, "json"))
    assert PV.objects.count() == 3


def test_malformed_json_body_is_4xx_not_500(write_client):
    response = write_client.post("/v1/pvs", "{bad", content_type="application/json")
    error(response, 422)


def test_multi_creates_in_input_order(write_client, django_capture_on_commit_callbacks):
    tag = TagFactory()
    items = [
        {"setpointAddress": "M:2", "tags": [str(tag.pk), str(uuid.uuid4())]},
        {"setpointAddress": "M:1", "readbackAddress": " "},
        {"readbackAddress": "M:RB"},
    ]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = payload(write_client.post("/v1/pvs/multi", items, "json"))
    assert len(callbacks) == 1
    # a read-back-only PV is listed by its readback, read-only (README "Read-back-only PVs")
    assert [r["setpointAddress"] for r in body] == ["M:2", "M:1", "M:RB"]
    assert [r["readOnly"] for r in body] == [False, False, True]
    assert PV.objects.get(readback_address="M:RB").setpoint_address is None
    assert body[1]["readbackAddress"] is None
    assert [t["id"] for t in body[0]["tags"]] == [str(tag.pk)]  # unknown id dropped
    assert all(set(r) == PV_KEYS for r in body)
    assert PV.objects.count() == 3
    assert payload(write_client.post("/v1/pvs/multi", [], "json")) == []


def test_multi_duplicates_in_payload_is_409(write_client):
    items = [{"setpointAddress": n} for n in ("B", "A", "B", "A", "C")]
    message = error(write_client.post("/v1/pvs/multi", items, "json"), 409)
    assert message == "Duplicate setpoint addresses in import: ['A', 'B']"
    assert not PV.objects.exists()


def test_multi_existing_is_409_and_nothing_written(write_client):
    PVFactory(setpoint_address="OLD")
    items = [{"setpointAddress": "NEW"}, {"setpointAddress": "OLD"}]
    message = error(write_client.post("/v1/pvs/multi", items, "json"), 409)
    assert message == "Setpoint addresses already exist: ['OLD']"
    assert PV.objects.count() == 1


@pytest.mark.parametrize("field", ["setpointAddress", "readbackAddress", "description", "device"])
def test_multi_nul_byte_is_422_naming_item_and_field(write_client, field):
    # The frontend's CSV import posts here (contract §7.3): a NUL byte is a field error of that
    # item, never a database error.
    items = [{"setpointAddress": "A"}, {"setpointAddress": "B", field: "x\x00y"}]
    response = write_client.post("/v1/pvs/multi", items, "json")
    assert "Null characters" in error(response, 422)
    assert response.json()["errors"][0]["loc"] == ["body", "1", field]
    assert not PV.objects.exists()


def test_multi_validation(write_client):
    items = [{"setpointAddress": "A"}, {"absTolerance": 1}]
    message = error(write_client.post("/v1/pvs/multi", items, "json"), 422)
    assert "1" in message and "At least one address" in message
    message = error(write_client.post("/v1/pvs/multi", [{"setpointAddress": "  "}], "json"), 409)
    assert "At least one address" in message
    error(write_client.post("/v1/pvs/multi", {"setpointAddress": "A"}, "json"), 422)
    assert not PV.objects.exists()


def test_update_pv(write_client):
    t1, t2 = TagFactory(), TagFactory()
    pv = PVFactory(description="old", abs_tolerance=1.0, tags=[t1])
    url = f"/v1/pvs/{pv.pk}"
    dto = payload(write_client.put(url, {"tags": [str(t2.pk), str(uuid.uuid4())]}, "json"))
    assert [t["id"] for t in dto["tags"]] == [str(t2.pk)]
    assert dto["description"] == "old" and dto["absTolerance"] == 1.0
    body = {
        "description": None,
        "absTolerance": 2.0,
        "readOnly": True,
        "setpointAddress": "IGNORED",
        "device": "IGNORED",
    }
    dto = payload(write_client.put(url, body, "json"))
    assert dto["description"] == "old" and dto["absTolerance"] == 2.0 and dto["readOnly"]
    assert dto["setpointAddress"] == pv.setpoint_address and dto["device"] is None
    assert datetime.fromisoformat(dto["lastModifiedDate"]) > datetime.fromisoformat(
        dto["createdDate"]
    )
    dto = payload(write_client.put(url, {"tags": [], "description": ""}, "json"))
    assert dto["tags"] == [] and dto["description"] == ""


def test_update_errors(write_client):
    pv = PVFactory()
    error(write_client.put(f"/v1/pvs/{uuid.uuid4()}", {"description": "x"}, "json"), 404)
    error(write_client.put("/v1/pvs/not-a-uuid", {"description": "x"}, "json"), 404)
    error(write_client.put(f"/v1/pvs/{pv.pk}", {"absTolerance": -1}, "json"), 422)
    error(write_client.put(f"/v1/pvs/{pv.pk}", {"tags": ["x"]}, "json"), 422)


def test_delete_keeps_snapshot_values(write_client):
    pv = PVFactory(setpoint_address="GONE")
    snapshot = Snapshot.objects.create(title="t")
    SnapshotValue.objects.create(snapshot=snapshot, pv=pv, pv_name="GONE")
    assert payload(write_client.delete(f"/v1/pvs/{pv.pk}?archive=false")) is True
    assert not PV.objects.exists()
    value = SnapshotValue.objects.get()
    assert value.pv_id is None and value.pv_name == "GONE"
    assert "not found" in error(write_client.delete(f"/v1/pvs/{pv.pk}"), 404)
    error(write_client.delete("/v1/pvs/123"), 404)


def test_search(read_client, django_assert_max_num_queries):
    t1, t2 = TagFactory(), TagFactory()
    PVFactory(setpoint_address="S:B", device="D1", tags=[t1, t2])
    PVFactory(setpoint_address="S:A", device="D2", tags=[t1])
    PVFactory(setpoint_address="S:C", device="D3")
    PVFactory(setpoint_address="Z", device="D1")
    with django_assert_max_num_queries(4):
        body = payload(read_client.get("/v1/pvs/search?q=s:&limit=2&offset=0"))
    assert set(body) == {
        "results",
        "totalCount",
        "limit",
        "offset",
        "liveValues",
        "liveValuesError",
    }
    assert [r["setpointAddress"] for r in body["results"]] == ["S:A", "S:B"]
    assert (body["totalCount"], body["limit"], body["offset"]) == (3, 2, 0)
    body = payload(read_client.get("/v1/pvs/search?devices=D1&devices=D2"))
    assert [r["setpointAddress"] for r in body["results"]] == ["S:A", "S:B", "Z"]
    # a PV with two matching tags appears once
    body = payload(read_client.get(f"/v1/pvs/search?tags={t1.pk}&tags={t2.pk}"))
    assert [r["setpointAddress"] for r in body["results"]] == ["S:A", "S:B"]
    body = payload(read_client.get("/v1/pvs/search?offset=3"))
    assert [r["setpointAddress"] for r in body["results"]] == ["Z"]


@pytest.mark.parametrize("query", ["limit=1001", "offset=-1", "tags=nope", "limit=x"])
def test_search_bad_query_is_422(read_client, query):
    error(read_client.get(f"/v1/pvs/search?{query}"), 422)


def test_search_with_live_values(read_client, redis_client):
    PVFactory(setpoint_address="L:SP", readback_address="L:RB")
    redis_client.hset(values_hash(), "L:SP", pack({"value": 1.5, "connected": True}))
    body = payload(read_client.get("/v1/pvs/search?include_live_values=true"))
    assert body["liveValuesError"] is None
    assert body["liveValues"] == {"L:SP": {"value": 1.5, "connected": True}}


def test_devices(read_client):
    for device in ("B", "A", "B", None, ""):
        PVFactory(device=device)
    assert payload(read_client.get("/v1/pvs/devices")) == ["A", "B"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("post", "/v1/pvs", {"setpointAddress": "A"}),
        ("post", "/v1/pvs/multi", [{"setpointAddress": "A"}]),
        ("put", "/v1/pvs/{id}", {"description": "x"}),
        ("delete", "/v1/pvs/{id}", None),
    ],
)
def test_read_key_cannot_write(read_client, method, url, body):
    pv = PVFactory(setpoint_address="KEEP", description="keep")
    response = getattr(read_client, method)(url.format(id=pv.pk), body, format="json")
    assert error(response, 401) == "API key does not have write access"
    assert list(PV.objects.values_list("setpoint_address", "description")) == [("KEEP", "keep")]


@pytest.mark.parametrize("level", ["none", "read", "write"])
def test_anonymous_access(api, settings, level):
    settings.ANONYMOUS_ACCESS = level
    read = api.get("/v1/pvs/paged")
    write = api.post("/v1/pvs", {"setpointAddress": "A"}, format="json")
    if level == "none":
        assert error(read, 401) == "Missing or deactivated API key"
    else:
        payload(read)
    if level == "write":
        payload(write)
    else:
        assert error(write, 401) == "Missing or deactivated API key"


def test_unknown_key_is_401(api):
    api.credentials(HTTP_X_API_KEY="sq_nope")
    assert error(api.get("/v1/pvs"), 401) == "Missing or deactivated API key"


@pytest.mark.parametrize("micro", [0, 380000, 123456])
def test_dates_are_iso_with_offset_for_any_fraction(read_client, micro):
    from datetime import UTC

    stamp = datetime(2026, 1, 27, 15, 1, 14, micro, tzinfo=UTC)
    pv = PVFactory()
    PV.objects.filter(pk=pv.pk).update(created_at=stamp, updated_at=stamp)
    (dto,) = payload(read_client.get("/v1/pvs"))
    assert dto["createdDate"].startswith("2026-01-27T15:01:14")
    assert dto["createdDate"].endswith("+00:00")
    assert datetime.fromisoformat(dto["createdDate"]) == stamp
    assert datetime.fromisoformat(dto["lastModifiedDate"]) == stamp


def test_multi_too_large_is_413_not_500(write_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    items = [{"setpointAddress": f"BIG:{i}"} for i in range(100)]
    assert "too large" in error(write_client.post("/v1/pvs/multi", items, "json"), 413)
    assert not PV.objects.exists()


def test_wrong_method_is_405_in_envelope(read_client):
    error(read_client.get("/v1/pvs/multi"), 405)
    error(read_client.get(f"/v1/pvs/{uuid.uuid4()}"), 405)


def test_documented_shapes_match_the_dto_builders():
    from pvs.serializers import PVElementOutSerializer
    from tags.serializers import TagGroupOutSerializer, TagGroupSummaryOutSerializer

    assert set(PVElementOutSerializer().fields) == PV_KEYS
    assert set(TagGroupOutSerializer().fields) == {
        "id",
        "name",
        "description",
        "tags",
        "createdDate",
        "lastModifiedDate",
    }
    assert set(TagGroupSummaryOutSerializer().fields) == {"id", "name", "description", "tagCount"}


# --- found by the schemathesis fuzz (tests/fuzz): bad input is a 4xx, never a 5xx -----------


def test_list_name_with_nul_is_422_not_503(read_client):
    # PostgreSQL cannot compare text holding NUL: the query used to fail as a database error.
    assert "Null characters" in error(read_client.get("/v1/pvs?pvName=a%00b"), 422)


def test_paged_tag_filters_nested_too_deeply_is_400_not_500(read_client):
    deep = quote("[" * 5000 + "]" * 5000)
    message = error(read_client.get(f"/v1/pvs/paged?tagFilters={deep}"), 400)
    assert message == "Invalid tagFilters JSON: nested too deeply"


@pytest.mark.parametrize("offset", [2**31, 35717090318346461184])
def test_search_offset_past_the_database_range_is_422(read_client, offset):
    assert "offset" in error(read_client.get(f"/v1/pvs/search?offset={offset}"), 422)
    payload(read_client.get(f"/v1/pvs/search?offset={2**31 - 1}"))

"""Finding snapshots (issue 17 items 5, 6, 8): list filters, subsets, meta-PVs, a PV's
history."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from pvs.models import PV
from snapshots import schedules
from snapshots.models import MetaPV, Snapshot
from tags.models import Tag, TagGroup
from tests.conftest import error, payload
from tests.restore.conftest import cache_set
from tests.snapshots.factories import captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def pvs() -> list[PV]:
    return [
        PV.objects.create(setpoint_address=f"F:{i}:SP", readback_address=f"F:{i}:RBV")
        for i in range(4)
    ]


def _snap(title: str, pvs: list[PV], value: float, age_days: float = 0, **fields) -> Snapshot:
    snap = snapshot_seed(
        title, [captured(pv, entry(value + i), entry(value + i + 0.5)) for i, pv in enumerate(pvs)],
        **fields,
    )  # fmt: skip
    Snapshot.objects.filter(pk=snap.pk).update(created_at=timezone.now() - timedelta(days=age_days))
    snap.refresh_from_db()
    return snap


def _titles(client, query: str) -> list[str]:
    return [s["title"] for s in payload(client.get(f"/v1/snapshots?{query}"))]


def test_list_filters(read_client, pvs):
    schedule = schedules.schedule_create(
        data=schedules.ScheduleData(name="s", interval_seconds=60),
        actor="cli:t",
        created_by="cli:t",
    )
    _snap("alpha run", pvs, 1.0, age_days=3, labels=["golden", "shift"], created_by="ann",
          description="before the quad scan")  # fmt: skip
    _snap("beta", pvs[:2], 2.0, age_days=2, labels=["shift"], created_by="bob")
    _snap("gamma", pvs[2:], 3.0, age_days=1, schedule=schedule, description="QUAD tuned")
    assert _titles(read_client, "") == ["gamma", "beta", "alpha run"]
    assert _titles(read_client, "limit=1&offset=1") == ["beta"]
    assert _titles(read_client, "labels=shift") == ["beta", "alpha run"]
    assert _titles(read_client, "labels=shift&labels=golden") == ["alpha run"]
    assert _titles(read_client, "labels=golden,shift") == ["alpha run"]
    assert _titles(read_client, "createdBy=bob") == ["beta"]
    after = (timezone.now() - timedelta(days=2.5)).isoformat().replace("+00:00", "Z")
    before = (timezone.now() - timedelta(days=1.5)).isoformat().replace("+00:00", "Z")
    assert _titles(read_client, f"createdAfter={after}") == ["gamma", "beta"]
    assert _titles(read_client, f"createdAfter={after}&createdBefore={before}") == ["beta"]
    assert _titles(read_client, "search=quad") == ["gamma", "alpha run"]
    assert _titles(read_client, "search=RUN") == ["alpha run"]
    assert _titles(read_client, f"containsPv={pvs[0].pk}") == ["beta", "alpha run"]
    assert _titles(read_client, "containsPv=F:3:SP") == ["gamma", "alpha run"]
    assert _titles(read_client, f"scheduleId={schedule.pk}") == ["gamma"]
    assert _titles(read_client, "labels=shift&search=alpha&createdBy=ann") == ["alpha run"]
    listed = payload(read_client.get(f"/v1/snapshots?scheduleId={schedule.pk}"))
    assert listed[0]["scheduleId"] == str(schedule.pk)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("createdAfter=yesterday", "createdAfter"),
        ("scheduleId=nope", "scheduleId"),
        ("metadataFilter=A:x:1", "metadataFilter"),
        ("metadataFilter=A", "metadataFilter"),
        ("limit=0", "limit"),
    ],
)
def test_list_filter_errors(read_client, query, words):
    assert words in error(read_client.get(f"/v1/snapshots?{query}"), 422)


def test_list_query_count_is_pinned(read_client, pvs, django_assert_num_queries):
    for i in range(5):
        _snap(f"s{i}", pvs, float(i), labels=["x"])
    with django_assert_num_queries(2):  # the API key, the page
        assert len(_titles(read_client, "labels=x&search=s")) == 5
    with django_assert_num_queries(3):  # + the saved values of the asked addresses
        payload(read_client.get("/v1/snapshots?metadataPVs=F:0:SP"))


def test_subset_snapshot_holds_exactly_the_selected_pvs(write_client, redis_client, pvs):
    group = TagGroup.objects.create(name="Area")
    other = TagGroup.objects.create(name="Kind")
    a, b, magnet = (Tag.objects.create(name=n, group=g) for n, g in
                    (("A", group), ("B", group), ("magnet", other)))  # fmt: skip
    pvs[0].tags.add(a, magnet)
    pvs[1].tags.add(b, magnet)
    pvs[2].tags.add(a)  # not a magnet
    cache_set(redis_client, {a: float(i) for i, pv in enumerate(pvs) for a in pv.addresses()})
    body = {"title": "subset", "tagFilters": [[str(a.pk), str(b.pk)], [str(magnet.pk)]]}
    summary = payload(write_client.post("/v1/snapshots?async=false", body, format="json"))
    assert summary["pvCount"] == 2
    assert summary["selection"] == {
        "pvIds": None,
        "tagFilters": [sorted([str(a.pk), str(b.pk)]), [str(magnet.pk)]],
    }
    response = write_client.get(f"/v1/snapshots/{summary['id']}")
    detail = json.loads(b"".join(response.streaming_content))["payload"]
    assert [v["pvName"] for v in detail["pvValues"]] == ["F:0:SP", "F:1:SP"]
    by_id = {"title": "ids", "pvIds": [str(pvs[3].pk)]}
    summary = payload(write_client.post("/v1/snapshots?async=false", by_id, format="json"))
    assert summary["pvCount"] == 1 and summary["selection"]["pvIds"] == [str(pvs[3].pk)]
    # Compare works on a subset as on any snapshot.
    full = payload(write_client.post("/v1/snapshots?async=false", {"title": "all"}, format="json"))
    compared = payload(write_client.get(f"/v1/snapshots/{full['id']}/compare/{summary['id']}"))
    assert compared["summary"]["onlyIn1"] == 3
    assert "pvIds" in error(
        write_client.post(
            "/v1/snapshots?async=false", {"title": "x", "pvIds": ["bad"]}, format="json"
        ),  # fmt: skip
        422,
    )


def test_meta_pvs_are_stored_listed_and_filtered(write_client, redis_client, pvs, settings):
    settings.SNAPSHOT_META_PVS = ["META:ENERGY", "META:MODE"]
    MetaPV.objects.create(address="META:CURRENT")
    values = {a: 1.0 for pv in pvs for a in pv.addresses()}
    cache_set(redis_client, {**values, "META:ENERGY": 135.5, "META:MODE": "user",
                             "META:CURRENT": 0.25})  # fmt: skip
    low = payload(write_client.post("/v1/snapshots?async=false", {"title": "low"}, format="json"))
    cache_set(redis_client, {**values, "META:ENERGY": 3000.0, "META:MODE": "tune",
                             "META:CURRENT": 0.5})  # fmt: skip
    high = payload(write_client.post("/v1/snapshots?async=false", {"title": "hi"}, format="json"))
    snap = Snapshot.objects.get(pk=low["id"])
    assert snap.metadata == {"META:ENERGY": 135.5, "META:MODE": "user", "META:CURRENT": 0.25}
    assert snap.pv_count == 4  # meta-PVs are not catalog values
    listed = payload(
        write_client.get(
            "/v1/snapshots?metadataPVs=META:ENERGY&metadataPVs=META:MODE,F:1:RBV"
            "&metadataPVs=NOT:SAVED"
        )  # fmt: skip
    )
    assert [s["metadataPVs"] for s in listed] == [
        {"META:ENERGY": 3000.0, "META:MODE": "tune", "F:1:RBV": 1.0, "NOT:SAVED": None},
        {"META:ENERGY": 135.5, "META:MODE": "user", "F:1:RBV": 1.0, "NOT:SAVED": None},
    ]
    assert [s["id"] for s in listed] == [high["id"], low["id"]]
    filtered = payload(write_client.get("/v1/snapshots?metadataFilter=META:ENERGY:100:200"))
    assert [s["title"] for s in filtered] == ["low"]
    assert _titles(write_client, "metadataFilter=META:ENERGY:1000:") == ["hi"]
    assert _titles(write_client, "metadataFilter=META:MODE::") == []  # a string is no number
    assert _titles(write_client, "metadataFilter=F:0:SP:0.5:1.5") == ["hi", "low"]
    assert _titles(write_client, "metadataFilter=F:0:SP:2:") == []


def test_pv_history_pages_one_pvs_saved_values(read_client, pvs):
    for i in range(5):
        _snap(f"h{i}", pvs, float(i * 10), age_days=5 - i)
    _snap("without", pvs[1:], 99.0)
    rows = payload(read_client.get(f"/v1/pvs/{pvs[0].pk}/history?limit=2&offset=1"))
    assert [(r["snapshotTitle"], r["setpointValue"]["value"]) for r in rows] == [
        ("h3", 30.0),
        ("h2", 20.0),
    ]
    assert set(rows[0]) == {"snapshotId", "snapshotTitle", "snapshotDate", "pvName",
                            "setpointValue", "readbackValue"}  # fmt: skip
    assert rows[0]["readbackValue"]["value"] == 30.5
    assert rows[0]["setpointValue"]["source"] == "cache"
    assert len(payload(read_client.get(f"/v1/pvs/{pvs[0].pk}/history"))) == 5
    assert error(read_client.get("/v1/pvs/nope/history"), 404)
    assert error(read_client.get(f"/v1/pvs/{pvs[0].pk}/history?limit=5000"), 422)

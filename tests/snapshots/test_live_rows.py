"""GET /v1/snapshots/{id}/live-rows: our live page's rows, saved and live shown alike, verdicts
kept per process from the update stream (snapshots.live_verdicts).

Real PostgreSQL and Redis: saved values are written by the real COPY path, live values are
put in the monitor's cache hash, and updates are published on its update channel as the
monitor publishes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from monitor import events, values
from snapshots import live_verdicts
from tests.conftest import error, payload
from tests.pvs.factories import PVFactory
from tests.snapshots.factories import NOW, captured, entry, snapshot_seed
from tests.tags.factories import TagFactory

pytestmark = [pytest.mark.django_db]

ROW_KEYS = {
    "pvId", "pvName", "setpointAddress", "readbackAddress", "verdict", "savedSetpoint",
    "liveSetpoint", "savedReadback", "liveReadback",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_states() -> Iterator[None]:
    live_verdicts.verdicts_reset()
    yield
    live_verdicts.verdicts_reset()


def live(value: Any, **extra: Any) -> dict[str, Any]:
    """A cache entry as the monitor writes it, updated now."""
    return {"value": value, "connected": True, "updated_at": time.time(), "severity": 0,
            "timestamp": NOW, **extra}  # fmt: skip


def cache_put(redis_client, entries: dict[str, dict[str, Any]]) -> None:
    redis_client.hset(events.values_hash(), mapping={a: values.pack(e) for a, e in entries.items()})


def publish(redis_client, entries: dict[str, dict[str, Any]]) -> None:
    """What the monitor's flush does: the hash and one published batch."""
    packed = {a: values.pack(e) for a, e in entries.items()}
    redis_client.hset(events.values_hash(), mapping=packed)
    redis_client.publish(events.updates_channel(), events.update_batch(time.time(), packed))


def rows_of(api, snapshot, query: str = "") -> dict[str, Any]:
    return payload(api.get(f"/v1/snapshots/{snapshot.pk}/live-rows{query}"))


@pytest.fixture
def demo(redis_client, monitor_heartbeat):
    """A snapshot of six PVs and a live cache in which each has a different story."""
    tag = TagFactory(name="magnets")
    pvs = {
        "float": PVFactory(setpoint_address="D:DEV2:SP", readback_address="D:DEV2:RBV",
                           tags=[tag]),
        "enum": PVFactory(setpoint_address="D:DEV10:SP"),
        "out": PVFactory(setpoint_address="D:DEV3:SP", abs_tolerance=0.5, tags=[tag]),
        "gone": PVFactory(setpoint_address="D:DEV4:SP"),
        "missing": PVFactory(setpoint_address="D:DEV5:SP"),
        "wave": PVFactory(setpoint_address="D:DEV1:WF"),
    }  # fmt: skip
    meta = {"units": "A", "precision": 2}
    snapshot = snapshot_seed(
        "demo",
        [
            captured(pvs["float"], entry(1.5, **meta), entry(1.25, **meta)),
            captured(pvs["enum"], entry("ON", index=1, enum_strs=["OFF", "ON"])),
            captured(pvs["out"], entry(10.0)),
            captured(pvs["gone"], entry(4.0)),
            captured(pvs["missing"], entry(5.0)),
            captured(pvs["wave"], entry([1.0, 2.0, 3.0, 4.0])),
        ],
    )
    cache_put(
        redis_client,
        {
            "D:DEV2:SP": live(1.5, **meta),
            "D:DEV2:RBV": live(1.25, **meta),
            "D:DEV10:SP": live("ON", index=1, enum_strs=["OFF", "ON"]),
            "D:DEV3:SP": live(10.75),  # beyond its 0.5 tolerance
            "D:DEV4:SP": live(None, connected=False, error=values.DISCONNECTED),
            "D:DEV1:WF": live([1.0, 2.0, 3.0, 4.0]),
        },
    )  # nothing cached for D:DEV5:SP
    return snapshot, pvs, tag


def test_shape_values_shown_alike_and_verdicts(api, demo):
    snapshot, pvs, _ = demo
    body = rows_of(api, snapshot)
    assert set(body) == {"snapshotId", "title", "phase", "monitorAlive", "offset", "limit",
                         "matched", "counts", "rows"}  # fmt: skip
    assert (body["snapshotId"], body["title"], body["phase"]) == (str(snapshot.pk), "demo", "ready")
    assert body["monitorAlive"] is True and (body["offset"], body["limit"]) == (0, 100)
    assert body["counts"] == {"total": 6, "equal": 3, "outOfTolerance": 1, "disconnected": 1,
                              "noLiveValue": 1}  # fmt: skip
    rows = {r["pvName"]: r for r in body["rows"]}
    assert all(set(r) == ROW_KEYS for r in body["rows"])
    # natural order: DEV1, DEV2, DEV3, DEV4, DEV5, DEV10
    assert [r["pvName"] for r in body["rows"]] == [
        "D:DEV1:WF", "D:DEV2:SP", "D:DEV3:SP", "D:DEV4:SP", "D:DEV5:SP", "D:DEV10:SP",
    ]  # fmt: skip
    f = rows["D:DEV2:SP"]
    assert f["verdict"] == "equal" and f["pvId"] == str(pvs["float"].pk)
    assert f["savedSetpoint"] == {"text": "1.50", "units": "A"}
    assert f["liveSetpoint"] == {"text": "1.50", "units": "A", "connected": True, "severity": 0,
                                 "timestamp": NOW}  # fmt: skip
    assert f["savedReadback"]["text"] == f["liveReadback"]["text"] == "1.25"
    assert f["readbackAddress"] == "D:DEV2:RBV"
    e = rows["D:DEV10:SP"]  # an enum: its label on both sides, and equal
    assert e["verdict"] == "equal"
    assert e["savedSetpoint"]["text"] == e["liveSetpoint"]["text"] == "ON"
    assert e["savedReadback"] is None and e["liveReadback"] is None
    w = rows["D:DEV1:WF"]  # arrays summarised alike
    assert w["savedSetpoint"]["text"] == w["liveSetpoint"]["text"] == "[4] 1, 2, 3…"
    assert w["verdict"] == "equal"
    o = rows["D:DEV3:SP"]
    assert o["verdict"] == "out-of-tolerance"
    assert (o["savedSetpoint"]["text"], o["liveSetpoint"]["text"]) == ("10", "10.75")
    g = rows["D:DEV4:SP"]
    assert g["verdict"] == "disconnected" and g["liveSetpoint"]["connected"] is False
    assert g["liveSetpoint"]["text"] is None
    m = rows["D:DEV5:SP"]
    assert m["verdict"] == "no-live-value" and m["liveSetpoint"] is None


def test_paging_keeps_the_counts_of_the_whole_snapshot(api, demo):
    snapshot, _, _ = demo
    first = rows_of(api, snapshot, "?limit=2")
    second = rows_of(api, snapshot, "?limit=2&offset=2")
    last = rows_of(api, snapshot, "?limit=2&offset=4")
    beyond = rows_of(api, snapshot, "?limit=2&offset=40")
    names = [r["pvName"] for page in (first, second, last) for r in page["rows"]]
    assert names == ["D:DEV1:WF", "D:DEV2:SP", "D:DEV3:SP", "D:DEV4:SP", "D:DEV5:SP", "D:DEV10:SP"]
    assert beyond["rows"] == [] and beyond["matched"] == 6
    assert first["counts"] == beyond["counts"] and first["counts"]["total"] == 6
    assert (second["offset"], second["limit"], second["matched"]) == (2, 2, 6)


def test_q_only_out_and_tags_filter_on_the_server(api, demo):
    snapshot, _, tag = demo
    body = rows_of(api, snapshot, "?q=dev1")  # case-insensitive substring of name/addresses
    assert [r["pvName"] for r in body["rows"]] == ["D:DEV1:WF", "D:DEV10:SP"]
    assert body["matched"] == 2 and body["counts"]["total"] == 6
    body = rows_of(api, snapshot, "?q=dev2:rbv")  # a readback address
    assert [r["pvName"] for r in body["rows"]] == ["D:DEV2:SP"]
    body = rows_of(api, snapshot, "?onlyOut=true")
    assert [r["pvName"] for r in body["rows"]] == ["D:DEV3:SP"]
    body = rows_of(api, snapshot, f"?tags={tag.pk}")
    assert [r["pvName"] for r in body["rows"]] == ["D:DEV2:SP", "D:DEV3:SP"]
    body = rows_of(api, snapshot, f"?tags={tag.pk}&onlyOut=1&q=DEV3")
    assert [r["pvName"] for r in body["rows"]] == ["D:DEV3:SP"]
    other = TagFactory()
    assert rows_of(api, snapshot, f"?tags={other.pk}")["rows"] == []


def test_updates_from_the_stream_change_verdicts_and_counts(api, demo, redis_client):
    snapshot, _, _ = demo
    before = rows_of(api, snapshot, "?onlyOut=true")
    assert [r["pvName"] for r in before["rows"]] == ["D:DEV3:SP"]
    publish(redis_client, {"D:DEV10:SP": live("OFF", index=0, enum_strs=["OFF", "ON"]),
                           "D:DEV3:SP": live(10.25)})  # fmt: skip
    deadline = time.monotonic() + 5
    while True:
        body = rows_of(api, snapshot, "?onlyOut=true")
        if [r["pvName"] for r in body["rows"]] == ["D:DEV10:SP"]:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    row = body["rows"][0]
    assert (row["savedSetpoint"]["text"], row["liveSetpoint"]["text"]) == ("ON", "OFF")
    assert body["counts"]["outOfTolerance"] == 1 and body["counts"]["equal"] == 3
    # an entry older than the one held is ignored (a batch published before the cache read)
    publish(redis_client, {"D:DEV3:SP": live(99.0, updated_at=1.0)})
    time.sleep(0.5)
    rows = {r["pvName"]: r for r in rows_of(api, snapshot)["rows"]}
    assert rows["D:DEV3:SP"]["liveSetpoint"]["text"] == "10.25"


def test_etag_answers_304_until_something_on_the_page_changes(api, demo, redis_client):
    snapshot, _, _ = demo
    url = f"/v1/snapshots/{snapshot.pk}/live-rows?limit=2"
    first = api.get(url)
    etag = first["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    assert first["Cache-Control"] == "no-cache"
    again = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    assert api.get(url + "&offset=1", HTTP_IF_NONE_MATCH=etag).status_code == 200
    publish(redis_client, {"D:DEV2:SP": live(1.75, units="A", precision=2)})
    deadline = time.monotonic() + 5
    while (response := api.get(url, HTTP_IF_NONE_MATCH=etag)).status_code == 304:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert response.status_code == 200 and response["ETag"] != etag
    assert payload(response)["rows"][1]["liveSetpoint"]["text"] == "1.75"


def test_without_a_monitor_heartbeat_nothing_has_a_live_value(api, redis_client):
    pv = PVFactory(setpoint_address="NB:SP")
    snapshot = snapshot_seed("s", [captured(pv, entry(1.0))])
    cache_put(redis_client, {"NB:SP": live(1.0)})  # cached, but no monitor vouches for it
    body = rows_of(api, snapshot)
    assert body["monitorAlive"] is False
    assert body["rows"][0]["verdict"] == "no-live-value"
    assert body["counts"]["noLiveValue"] == 1


def test_pages_of_one_snapshot_share_one_state(api, demo):
    snapshot, _, _ = demo
    rows_of(api, snapshot)
    state = live_verdicts.verdict_state(snapshot_id=str(snapshot.pk))
    for query in ("", "?onlyOut=true", "?q=x&limit=1", "?offset=3"):
        rows_of(api, snapshot, query)
    assert live_verdicts.verdict_state(snapshot_id=str(snapshot.pk)) is state


def test_a_snapshot_still_being_compared_answers_comparing(api, demo):
    snapshot, _, _ = demo
    building = live_verdicts.VerdictState(snapshot_id=str(snapshot.pk))
    live_verdicts._states[str(snapshot.pk)] = building  # another request is building it
    body = rows_of(api, snapshot)
    assert (body["phase"], body["counts"], body["rows"], body["matched"]) == (
        "comparing", None, [], 0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=501", "limit=x", "offset=-1", "tags=nope", "onlyOut=maybe",
     f"q={'x' * 256}"],
)  # fmt: skip
def test_bad_query_is_422_in_the_envelope(api, demo, query):
    snapshot, _, _ = demo
    error(api.get(f"/v1/snapshots/{snapshot.pk}/live-rows?{query}"), 422)


@pytest.mark.parametrize("snapshot_id", ["0b6c7c1e-1111-4222-8333-444455556666", "not-a-uuid"])
def test_unknown_snapshot_is_404(api, db, snapshot_id):
    assert "not found" in error(api.get(f"/v1/snapshots/{snapshot_id}/live-rows"), 404)


def test_redis_away_is_503_not_500(api, demo, redis_down):
    snapshot, _, _ = demo
    error(api.get(f"/v1/snapshots/{snapshot.pk}/live-rows"), 503)


def test_a_poll_of_a_ready_state_queries_nothing(api, demo, django_assert_num_queries):
    snapshot, _, _ = demo
    rows_of(api, snapshot)
    with django_assert_num_queries(0):
        body = rows_of(api, snapshot, "?onlyOut=true")
    assert body["title"] == "demo" and body["counts"]["total"] == 6


def test_a_deleted_snapshot_is_404_once_checked_again(api, demo):
    snapshot, _, _ = demo
    rows_of(api, snapshot)
    snapshot_id = str(snapshot.pk)
    state = live_verdicts.state_checked(snapshot_id=snapshot_id)
    assert state is not None
    snapshot.delete()
    url = f"/v1/snapshots/{snapshot_id}/live-rows"
    assert payload(api.get(url))["title"] == "demo"  # within EXISTS_SECONDS: not checked yet
    state.checked_at -= live_verdicts.EXISTS_SECONDS + 1  # the check is due
    error(api.get(url), 404)

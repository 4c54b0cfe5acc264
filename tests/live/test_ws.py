"""WebSocket live values against the real Redis and the real update channel (contract §4)."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from channels.testing import WebsocketCommunicator
from django.conf import settings

from live.fanout import fanout
from monitor import events
from monitor.values import pack
from squirrel.asgi import application

pytestmark = pytest.mark.asyncio


def entry(value, **extra):
    return {"value": value, "connected": True, "updated_at": time.time(), "severity": 0,
            "status": 0, **extra}  # fmt: skip


@pytest_asyncio.fixture
async def rds():
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.REDIS_PREFIX}*")]
    if keys:
        await client.delete(*keys)
    await fanout().stop()
    await client.aclose()


async def publish(rds, updates: dict) -> None:
    """What the monitor does on each flush: one HSET and one published batch."""
    await rds.hset(events.values_hash(), mapping={k: pack(v) for k, v in updates.items()})
    await rds.publish(events.updates_channel(), msgpack.packb({"t": time.time(), "u": updates}))


async def connect(path="/v1/ws/pvs", headers=None):
    communicator = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def wait_listening():
    hub = fanout()
    for _ in range(50):
        if hub._tasks and hub._redis is not None:
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(0.02)


async def test_subscribe_sends_initial_from_cache_then_diffs(rds):
    await rds.hset(events.values_hash(), "A:1", pack(entry(1.5, units="mA")))
    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "pvNames": ["A:1", "NOT:CACHED"]})
    initial = await ws.receive_json_from(timeout=2)
    assert initial["type"] == "initial" and initial["count"] == 1
    assert set(initial["data"]) == {"A:1"}
    got = initial["data"]["A:1"]
    assert got["value"] == 1.5 and got["connected"] is True and got["units"] == "mA"
    assert got["status"] == "NO_ALARM" and isinstance(got["updated_at"], float)

    await wait_listening()
    started = time.monotonic()
    await publish(rds, {"A:1": entry(2.5), "B:2": entry(9)})
    diff = await ws.receive_json_from(timeout=2)
    elapsed = time.monotonic() - started
    assert diff["type"] == "diff" and diff["count"] == 1
    assert diff["data"]["A:1"]["value"] == 2.5 and "B:2" not in diff["data"]
    assert isinstance(diff["timestamp"], float)
    assert elapsed < 0.3 + 0.5  # batch interval is 100 ms; generous for a loaded CI machine
    await ws.disconnect()


async def test_no_diff_overtakes_the_initial_values(rds, monkeypatch):
    """An update that arrives while a subscribe is still reading the cache must not reach the
    client before its ``initial``: an older initial after a newer diff would leave a stale
    value on screen until the PV changes again (hours, for a setpoint)."""
    await rds.hset(events.values_hash(), "O:1", pack(entry(1.0)))
    watcher = await connect()  # starts the listener
    await wait_listening()
    hub = fanout()
    read_cache = hub.current

    async def slow_current(names):
        got = await read_cache(names)
        await publish(rds, {"O:1": entry(2.0)})  # arrives while the initial is not yet sent
        await asyncio.sleep(0.4)  # several flush intervals
        return got

    monkeypatch.setattr(hub, "current", slow_current)
    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "pvNames": ["O:1"]})
    first = await ws.receive_json_from(timeout=3)
    assert first["type"] == "initial" and first["data"]["O:1"]["value"] == 1.0
    then = await ws.receive_json_from(timeout=2)
    assert then["type"] == "diff" and then["data"]["O:1"]["value"] == 2.0
    await ws.disconnect()
    await watcher.disconnect()


async def test_latest_value_wins_within_a_batch(rds):
    ws = await connect("/v1/ws/live")
    await ws.send_json_to({"type": "subscribe", "pv_names": ["C:1"]})
    await wait_listening()
    assert await ws.receive_nothing(timeout=0.2)  # nothing cached: no initial
    for value in range(5):
        await publish(rds, {"C:1": entry(value)})
    await asyncio.sleep(0.5)
    values = []
    # (a receive that times out cancels the app in asgiref's communicator: drain this way)
    while not await ws.receive_nothing(timeout=0.1):
        values.append((await ws.receive_json_from())["data"]["C:1"]["value"])
    assert values[-1] == 4 and len(values) < 5
    await ws.disconnect()


async def test_unsubscribe_stops_diffs(rds):
    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "pvNames": ["D:1"]})
    await wait_listening()
    await ws.send_json_to({"type": "unsubscribe", "pvNames": ["D:1"]})
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=2))["type"] == "pong"
    await publish(rds, {"D:1": entry(1)})
    assert await ws.receive_nothing(timeout=0.4)
    await ws.disconnect()


async def test_ping_get_all_and_malformed_frames(rds):
    await rds.hset(events.values_hash(), mapping={"E:1": pack(entry(float("nan")))})
    ws = await connect()
    await ws.send_to(text_data="this is not json")
    assert (await ws.receive_json_from(timeout=2)) == {
        "type": "error", "message": "Malformed message: not JSON"}  # fmt: skip
    await ws.send_to(text_data="[1, 2]")
    assert (await ws.receive_json_from(timeout=2))["type"] == "error"
    await ws.send_json_to({"type": "subscribe", "pvNames": "E:1"})
    assert "list of strings" in (await ws.receive_json_from(timeout=2))["message"]
    await ws.send_json_to({"type": "no-such-type"})
    await ws.send_json_to({"type": "ping"})
    pong = await ws.receive_json_from(timeout=2)
    assert pong["type"] == "pong" and isinstance(pong["timestamp"], float)
    await ws.send_json_to({"type": "get_all"})
    everything = await ws.receive_json_from(timeout=2)
    assert everything["type"] == "all_values" and everything["count"] == 1
    assert everything["values"]["E:1"]["value"] is None  # NaN never reaches the wire
    await ws.disconnect()


async def test_anonymous_refused_when_access_is_none(rds, settings):
    settings.ANONYMOUS_ACCESS = "none"
    communicator = WebsocketCommunicator(application, "/v1/ws/pvs")
    connected, code = await communicator.connect()
    assert not connected and code == 1008


async def test_slow_client_is_bounded_and_does_not_delay_the_fast_one(rds):
    names = [f"S:{i}" for i in range(1000)]
    slow = await connect()
    fast = await connect()
    hub = fanout()
    await slow.send_json_to({"type": "subscribe", "pvNames": names})
    await fast.send_json_to({"type": "subscribe", "pvNames": names[:10]})
    await wait_listening()
    slow_client = next(c for c in hub.clients.values() if len(c.wanted) == 1000)

    # The slow client's diff sends never complete: block its sender.
    gate = asyncio.Event()
    original = slow_client.send

    async def stuck(text):
        await gate.wait()
        await original(text)

    slow_client.send = stuck
    for round_ in range(50):  # 50 batches x 1000 PVs = 50K updates
        await publish(rds, {n: entry(round_) for n in names})
    latest = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        message = await fast.receive_json_from(timeout=2)
        latest = message["data"]["S:0"]["value"]
        if latest == 49:
            break
    assert latest == 49  # the fast client saw the last batch
    # At most one send in flight, pending coalesced per PV: bounded by its subscriptions.
    assert len(slow_client.pending) <= 1000
    assert slow_client.sent_diffs == 0
    gate.set()
    await asyncio.sleep(0.5)
    await slow.disconnect()
    await fast.disconnect()


async def test_ws_status_counts_this_process_clients(rds):
    from asgiref.sync import sync_to_async
    from django.test import Client

    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "pvNames": ["W:1", "W:2"]})
    await ws.send_json_to({"type": "ping"})
    await ws.receive_json_from(timeout=2)
    response = await sync_to_async(Client().get)("/v1/ws/status")
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"instanceId", "multiInstanceEnabled", "activeConnections",
                         "totalSubscriptions", "uniquePVsSubscribed", "bufferSize",
                         "batchIntervalMs"}  # fmt: skip
    assert body["activeConnections"] >= 1 and body["uniquePVsSubscribed"] >= 2
    assert body["batchIntervalMs"] == 100 and body["multiInstanceEnabled"] is False
    await ws.disconnect()


async def test_diff_text_is_the_json_of_the_diff_message():
    from live.fanout import diff_text
    from monitor.values import to_wire
    from squirrel.api import encode

    entries = {"A:1": entry(1.5, units="mA"), 'Q:"x"\\é': entry("text"), "E": entry(None)}
    members = {n: encode(n) + b":" + encode(to_wire(e)) for n, e in entries.items()}
    text = diff_text(members, 1795545610.25)
    assert json.loads(text) == {
        "type": "diff",
        "data": {n: to_wire(e) for n, e in entries.items()},
        "count": 3,
        "timestamp": 1795545610.25,
    }
    assert json.loads(diff_text({}, 1.0)) == {"type": "diff", "data": {}, "count": 0,
                                              "timestamp": 1.0}  # fmt: skip

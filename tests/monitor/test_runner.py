"""monitor.runner: bounded runs against a real IOC, and with a scripted fake client."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest
from asgiref.sync import sync_to_async

from monitor import cache, events, runner, services, values
from pvs.models import PV
from pvs.services import pv_create
from tests.monitor.test_ca import SoftIoc, ioc  # noqa: F401  (fixture)

STATS_FIELDS = {
    "leader", "started_at", "last_check", "check_count", "monitored_pvs", "connected_pvs",
    "disconnected_count", "stale_count", "reconnect_attempts", "successful_reconnects",
    "failed_reconnects", "last_errors", "updates_total", "updates_dropped",
}  # fmt: skip


def _entries(redis_client) -> dict[str, dict]:
    raw = redis_client.hgetall(events.values_hash())
    return {k.decode(): values.unpack(v) for k, v in raw.items()}


async def _until(predicate, timeout: float) -> float:
    """Seconds until ``predicate()`` (a sync call) held; fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await asyncio.to_thread(predicate):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture
def catalog(ioc):  # noqa: F811
    """A catalog on the test IOC: setpoint+readback, an enum, a string, a waveform, a
    read-only counter, and one address no IOC serves."""
    p = ioc.prefix
    pv_create(setpoint_address=f"{p}AO", readback_address=f"{p}RB", device="T")
    pv_create(setpoint_address=f"ca://{p}ENUM")
    pv_create(setpoint_address=f"{p}STR", config_address=f"{p}AO")  # AO twice: deduplicated
    pv_create(setpoint_address=f"{p}WF")
    pv_create(readback_address=f"{p}CNT", read_only=True)
    pv_create(setpoint_address=f"{p}MISSING")
    return {
        f"{p}AO", f"{p}RB", f"ca://{p}ENUM", f"{p}STR", f"{p}WF", f"{p}CNT", f"{p}MISSING",
    }  # fmt: skip


def _start(**kwargs) -> tuple[asyncio.Event, asyncio.Task]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(runner.run(stop=stop, max_seconds=60, **kwargs))


@pytest.mark.epics
@pytest.mark.django_db(transaction=True)
def test_every_catalog_pv_lands_in_redis_with_metadata(ioc, catalog, redis_client):  # noqa: F811
    p = ioc.prefix
    messages: list[dict] = []
    # Left by an earlier run for a PV since removed from the catalog: pruned at start.
    redis_client.hset(events.values_hash(), "GONE:PV", values.pack({"value": 1}))
    redis_client.sadd(events.disconnected_set(), "GONE:PV")

    async def scenario():
        pubsub = events.async_redis().pubsub()
        await pubsub.subscribe(events.updates_channel())
        stop, task = _start()
        took = await _until(lambda: set(_entries(redis_client)) == catalog, 10.0)
        await _until(lambda: int(redis_client.hget(events.stats_key(0), "check_count") or 0), 5)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message:
                messages.append(msgpack.unpackb(message["data"], raw=False))
        lock_holder = redis_client.get(events.lock_key(0))
        stop.set()
        assert await task == 0
        await pubsub.aclose()
        return took, lock_holder

    took, lock_holder = asyncio.run(scenario())
    print(f"catalog of {len(catalog)} addresses in Redis after {took:.2f} s")
    got = _entries(redis_client)
    ao = got[f"{p}AO"]
    assert ao["value"] == 1.5 and ao["connected"] is True and ao["status"] == 0
    assert ao["severity"] == 0 and ao["timestamp"] > 631152000 and ao["updated_at"] > 0
    assert ao["units"] == "mm" and ao["precision"] == 3 and ao["upper_ctrl_limit"] == 10.0
    assert got[f"ca://{p}ENUM"]["value"] == "On" and got[f"ca://{p}ENUM"]["index"] == 1
    assert got[f"ca://{p}ENUM"]["enum_strs"] == ["Off", "On", "Fault"]
    assert got[f"{p}STR"]["value"] == "hello"
    assert got[f"{p}WF"]["connected"] is True
    assert got[f"{p}CNT"]["value"] > 0
    missing = got[f"{p}MISSING"]
    assert missing["connected"] is False and "value" not in missing and missing["error"]
    assert {m.decode() for m in redis_client.smembers(events.disconnected_set())} == {f"{p}MISSING"}
    # Published batches: {"t": epoch, "u": {address: entry}}, the counter among them.
    assert messages and all(set(m) == {"t", "u"} for m in messages)
    assert any(f"{p}CNT" in m["u"] for m in messages)
    # Heartbeat, stats, and the lock released on stop.
    assert time.time() - float(redis_client.get(events.heartbeat_key(0))) < 5
    assert redis_client.get(events.shards_key()) == b"1"  # what the liveness rule reads
    stats = {k.decode(): v.decode() for k, v in redis_client.hgetall(events.stats_key(0)).items()}
    assert set(stats) == STATS_FIELDS
    assert stats["leader"] == lock_holder.decode()
    assert int(stats["monitored_pvs"]) == 7 and int(stats["connected_pvs"]) == 6
    assert int(stats["disconnected_count"]) == 1 and json.loads(stats["last_errors"]) == []
    assert int(stats["updates_total"]) >= 6
    assert redis_client.get(events.lock_key(0)) is None


@pytest.mark.epics
@pytest.mark.django_db(transaction=True)
def test_catalog_additions_and_removals_picked_up(ioc, catalog, redis_client):  # noqa: F811
    p = ioc.prefix

    async def scenario():
        stop, task = _start()
        await _until(lambda: set(_entries(redis_client)) == catalog, 10.0)
        await sync_to_async(pv_create)(setpoint_address=f"{p}NEW", readback_address=f"{p}RB")
        added = await _until(lambda: f"{p}NEW" in _entries(redis_client), 5.0)
        await sync_to_async(lambda: PV.objects.filter(setpoint_address=f"{p}WF").delete())()
        removed = await _until(lambda: f"{p}WF" not in _entries(redis_client), 5.0)
        stop.set()
        await task
        return added, removed

    added, removed = asyncio.run(scenario())
    print(f"addition seen after {added:.2f} s, removal after {removed:.2f} s")
    got = _entries(redis_client)
    assert got[f"{p}NEW"]["value"] == 7.0 and got[f"{p}NEW"]["connected"] is True
    assert f"{p}WF" not in got and f"{p}RB" in got


@pytest.mark.epics
@pytest.mark.django_db(transaction=True)
def test_killed_ioc_marks_disconnected_then_restart_brings_values(ioc, catalog, redis_client):  # noqa: F811
    p = ioc.prefix

    def entry(name):
        data = redis_client.hget(events.values_hash(), name)
        return values.unpack(data) if data else None

    async def scenario():
        stop, task = _start()
        await _until(lambda: (entry(f"{p}AO") or {}).get("connected") is True, 10.0)
        before = entry(f"{p}AO")
        ioc.kill()
        lost = await _until(lambda: entry(f"{p}AO")["connected"] is False, 5.0)
        after_kill = entry(f"{p}AO")
        down = {m.decode() for m in redis_client.smembers(events.disconnected_set())}
        ioc.start()
        back = await _until(lambda: entry(f"{p}CNT")["connected"] is True, 10.0)
        await _until(lambda: entry(f"{p}AO")["connected"] is True, 5.0)
        stats = redis_client.hgetall(events.stats_key(0))
        stop.set()
        await task
        return before, lost, after_kill, down, back, stats

    before, lost, after_kill, down, back, stats = asyncio.run(scenario())
    print(f"disconnect written after {lost:.2f} s; values again {back:.2f} s after restart")
    assert after_kill["value"] == before["value"] and after_kill["timestamp"] == before["timestamp"]
    assert after_kill["error"] == values.DISCONNECTED and after_kill["units"] == "mm"
    assert catalog - {f"{p}MISSING"} <= down
    assert f"{p}AO" not in {m.decode() for m in redis_client.smembers(events.disconnected_set())}
    assert int(stats[b"reconnect_attempts"]) >= 6


# --- with a scripted fake client (no network) -----------------------------------------------


class FakeClient:
    """Stands in for monitor.ca.CAClient at the process boundary; emits scripted updates."""

    instances: list[FakeClient] = []

    def __init__(self) -> None:
        self.on_update = None
        self.on_connection = None
        self.subscribed: set[str] = set()
        self.disconnects = 0
        self.failed_connects = 0
        FakeClient.instances.append(self)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    def subscribe(self, names, on_update=None, on_connection=None):
        self.subscribed.update(names)

    def clear(self, names):
        self.subscribed.difference_update(names)

    def connected_names(self):
        return set(self.subscribed)


@pytest.mark.django_db(transaction=True)
def test_burst_coalesces_latest_value_wins(redis_client):
    names = [f"F:{i}" for i in range(10)]
    for name in names:
        pv_create(setpoint_address=name)
    FakeClient.instances.clear()

    async def scenario():
        stop, task = _start(client_factory=FakeClient)
        await _until(lambda: bool(FakeClient.instances and FakeClient.instances[0].subscribed), 5)
        client = FakeClient.instances[0]
        for i in range(100_000):  # a burst within one flush interval
            name = names[i % 10]
            client.on_update(name, {"value": float(i), "connected": True, "updated_at": 1.0})
        client.on_update("NOT:IN:CATALOG", {"value": 1.0, "connected": True})
        await _until(lambda: _entries(redis_client).get("F:9", {}).get("value") == 99_999.0, 5)
        await asyncio.sleep(1.2)  # one more heartbeat writes the stats
        stop.set()
        await task

    asyncio.run(scenario())
    got = _entries(redis_client)
    assert set(got) == set(names)
    assert [got[n]["value"] for n in names] == [float(99_990 + i) for i in range(10)]
    stats = redis_client.hgetall(events.stats_key(0))
    assert int(stats[b"updates_total"]) == 100_000
    assert int(stats[b"updates_dropped"]) >= 100_000 - 10 * 2


@pytest.mark.django_db(transaction=True)
def test_standby_waits_while_another_holds_the_lock(redis_client):
    redis_client.set(events.lock_key(0), "someone-else", px=60_000)
    FakeClient.instances.clear()

    async def scenario():
        await runner.run(max_seconds=1.5, client_factory=FakeClient)

    asyncio.run(scenario())
    assert FakeClient.instances == []  # never led
    assert redis_client.get(events.lock_key(0)) == b"someone-else"  # not released by a standby
    assert redis_client.get(events.heartbeat_key(0)) is None


@pytest.mark.django_db
def test_shards_split_the_catalog_by_stable_hash():
    for i in range(50):
        pv_create(setpoint_address=f"S:{i}:SP", readback_address=f"S:{i}:RB")
    every = services.monitor_addresses()
    parts = [services.monitor_addresses(shards=3, shard=i) for i in range(3)]
    assert len(every) == 100 and set().union(*parts) == every
    assert sum(len(part) for part in parts) == 100 and all(parts)
    assert cache.shard_of("S:1:SP", 3) == cache.shard_of("S:1:SP", 3)


def test_run_refuses_a_bad_shard():
    with pytest.raises(ValueError):
        asyncio.run(runner.run(shards=2, shard=2, max_seconds=0.1))

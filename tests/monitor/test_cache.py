"""monitor.cache: the one liveness rule (shard-aware) and the value reads, on the real Redis."""

from __future__ import annotations

import asyncio
import time

import pytest

from monitor import cache, events, values


def _addresses_by_shard(shards: int, count: int = 40) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {s: [] for s in range(shards)}
    for i in range(count):
        name = f"LIVE:{i}:SP"
        out[cache.shard_of(name, shards)].append(name)
    assert all(out.values()), "each shard owns some of the names"
    return out


def _entry(value: float, **extra) -> values.Entry:
    return {"value": value, "connected": True, "updated_at": time.time(), **extra}


def test_no_heartbeat_means_nothing_is_current(redis_client):
    redis_client.hset(events.values_hash(), "A:B:C", values.pack(_entry(1.0)))
    liveness = cache.liveness_read()
    assert (liveness.shards, liveness.alive, liveness.any_alive) == (1, False, False)
    assert liveness.vouched_at("A:B:C") is None and liveness.oldest is None
    # A fresh updated_at does not make a value current when no monitor follows it.
    assert cache.current_entries(["A:B:C"]) == {}
    assert set(cache.values_read(["A:B:C", "X"])) == {"A:B:C"}


def test_one_live_monitor_vouches_for_every_address(redis_client):
    now = time.time()
    redis_client.set(events.heartbeat_key(), str(now - 1))
    redis_client.hset(
        events.values_hash(),
        mapping={
            "OLD:1": values.pack({**_entry(1.0), "updated_at": now - 3600}),
            "OFF:1": values.pack({**_entry(2.0), "connected": False}),
        },
    )
    liveness = cache.liveness_read()
    assert liveness.alive and liveness.shards == 1
    assert liveness.vouched_at("OLD:1") == pytest.approx(now - 1)
    assert liveness.oldest_age == pytest.approx(1, abs=0.5)
    assert set(cache.current_entries(["OLD:1", "OFF:1", "MISSING"])) == {"OLD:1"}


@pytest.mark.parametrize("beat", ["garbage", "nan", None])
def test_an_old_or_unreadable_heartbeat_is_dead(redis_client, settings, beat):
    settings.MONITOR_ALIVE_SECONDS = 5.0
    redis_client.set(events.heartbeat_key(), str(time.time() - 6) if beat is None else beat)
    liveness = cache.liveness_read()
    assert not liveness.alive and liveness.dead_shards == [0]


def test_a_dead_shard_vouches_for_nothing_the_live_one_still_does(redis_client):
    shards = _addresses_by_shard(2)
    now = time.time()
    redis_client.set(events.shards_key(), "2")
    redis_client.set(events.heartbeat_key(0), str(now))
    redis_client.set(events.heartbeat_key(1), str(now - 3600))  # shard 1's monitor died
    every = [a for names in shards.values() for a in names]
    redis_client.hset(events.values_hash(), mapping={a: values.pack(_entry(1.0)) for a in every})
    liveness = cache.liveness_read()
    assert (liveness.shards, liveness.alive, liveness.any_alive) == (2, False, True)
    assert liveness.dead_shards == [1]
    assert all(liveness.current(a) for a in shards[0])
    assert not any(liveness.current(a) for a in shards[1])
    assert set(cache.current_entries(every)) == set(shards[0])


def test_a_missing_shard_heartbeat_is_dead_when_the_monitor_said_how_many(redis_client):
    shards = _addresses_by_shard(3)
    redis_client.set(events.shards_key(), "3")
    redis_client.set(events.heartbeat_key(0), str(time.time()))
    redis_client.set(events.heartbeat_key(2), str(time.time()))
    liveness = cache.liveness_read()
    assert liveness.dead_shards == [1]
    assert not any(liveness.current(a) for a in shards[1])
    assert all(liveness.current(a) for a in shards[0] + shards[2])


def test_the_shard_count_is_inferred_from_heartbeat_keys_when_not_written(redis_client):
    redis_client.set(events.heartbeat_key(0), str(time.time()))
    redis_client.set(events.heartbeat_key(1), str(time.time() - 3600))
    liveness = cache.liveness_read()
    assert liveness.shards == 2 and liveness.dead_shards == [1]


def test_the_async_reader_applies_the_same_rule(redis_client):
    redis_client.set(events.shards_key(), "2")
    redis_client.set(events.heartbeat_key(0), str(time.time()))

    async def read() -> cache.Liveness:
        client = events.async_redis()
        try:
            return await cache.liveness_read_async(client)
        finally:
            await client.aclose()

    liveness = asyncio.run(read())
    assert liveness == cache.liveness_from(
        now=liveness.now, shards=2, beats_raw=[redis_client.get(events.heartbeat_key(0)), None]
    )
    assert liveness.dead_shards == [1]


def test_wire_reads_skip_corrupt_entries(redis_client):
    redis_client.hset(
        events.values_hash(),
        mapping={"GOOD": values.pack(_entry(1.5, status=0)), "BAD": b"\xc1not msgpack"},
    )
    assert set(cache.wire_read(["GOOD", "BAD", "NONE"])) == {"GOOD"}
    assert cache.wire_read(["GOOD"])["GOOD"]["status"] == "NO_ALARM"
    assert set(cache.wire_read_all()) == {"GOOD"}
    assert cache.cached_count() == 2

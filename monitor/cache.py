"""The one reader of what the monitor keeps in Redis: cached values, heartbeats, the liveness rule.

Only ``monitor.runner`` writes the value hash and the heartbeats; every other process reads them
here, with key names from ``monitor.events`` and entries decoded by ``monitor.values``.

**The liveness rule** (DESIGN.md "Liveness"): a cached value counts as current only while the
monitor shard that owns its address has a live heartbeat, one younger than
``settings.MONITOR_ALIVE_SECONDS``. A live leader holds a Channel Access subscription on every
address of its shard, so its connected entries are current as of its heartbeat even when they
have not changed for hours; a dead one's entries may be any age, however recent their
``updated_at`` looks. Capture, the restore plan, compare-to-live, health and the live views all
ask ``liveness_read`` (or its async twin) and nothing else.

1. Which shard owns an address is ``shard_of`` (a stable crc32), the same function the monitor
   uses to split the catalog.
2. How many shards there are: every leader writes its ``--shards`` to ``events.shards_key``
   with each heartbeat. When that key is missing (no monitor ever ran, or one from before the
   key existed), the count is inferred from the heartbeat keys present (highest shard + 1), so a
   lone dead shard is never mistaken for "no sharding".
3. A shard whose heartbeat is missing, unreadable or too old is dead: its addresses are read
   directly by capture and planning.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import redis
import redis.asyncio as aioredis
from django.conf import settings

from monitor import events, values
from monitor.values import Entry, unpack


def shard_of(address: str, shards: int) -> int:
    """The shard an address belongs to: a stable hash (crc32), the same on every machine."""
    return zlib.crc32(address.encode()) % shards if shards > 1 else 0


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


def beat_time(raw: bytes | str | None) -> float | None:
    """A heartbeat's epoch seconds, or None when missing or unreadable."""
    try:
        number = float(_text(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _shard_count(raw: bytes | str | None) -> int | None:
    try:
        count = int(_text(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return count if count >= 1 else None


# --- liveness ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liveness:
    """The monitor shards' heartbeats as read at ``now``, and the one rule applied to them."""

    now: float
    shards: int
    beats: tuple[float | None, ...]  # per shard: epoch seconds, None when missing/unreadable
    raw: tuple[str | None, ...]  # per shard: the stored text, None when missing

    def age(self, shard: int) -> float | None:
        beat = self.beats[shard]
        return None if beat is None else max(0.0, self.now - beat)

    def shard_alive(self, shard: int) -> bool:
        age = self.age(shard)
        return age is not None and age < settings.MONITOR_ALIVE_SECONDS

    @property
    def alive(self) -> bool:
        """Every shard alive: the whole catalog is followed."""
        return all(self.shard_alive(s) for s in range(self.shards))

    @property
    def any_alive(self) -> bool:
        return any(self.shard_alive(s) for s in range(self.shards))

    @property
    def dead_shards(self) -> list[int]:
        return [s for s in range(self.shards) if not self.shard_alive(s)]

    @property
    def oldest(self) -> float | None:
        """The oldest heartbeat, None if any shard has none: what "the monitor's heartbeat"
        means to a reader of the whole catalog."""
        beats = self.beats
        return None if any(b is None for b in beats) else min(b for b in beats if b is not None)

    @property
    def oldest_age(self) -> float | None:
        oldest = self.oldest
        return None if oldest is None else round(max(0.0, self.now - oldest), 3)

    def missing(self) -> str | None:
        """Why there is no usable heartbeat, in words; None if every shard has one."""
        for shard, (raw, beat) in enumerate(zip(self.raw, self.beats, strict=True)):
            if beat is None:
                one = self.shards == 1
                if raw is None:
                    return "No heartbeat from " + (
                        "the monitor" if one else f"monitor shard {shard}"
                    )
                return (
                    "Unreadable heartbeat" + ("" if one else f" from shard {shard}") + f": {raw!r}"
                )
        return None

    def vouchers(self) -> tuple[float | None, ...]:
        """Per shard: its heartbeat while alive, else None."""
        return tuple(self.beats[s] if self.shard_alive(s) else None for s in range(self.shards))

    def vouched_at(self, address: str) -> float | None:
        """The heartbeat that vouches for ``address``'s cached entry, None if its shard is
        dead (then the entry is not current, whatever its ``updated_at``)."""
        shard = shard_of(address, self.shards)
        return self.beats[shard] if self.shard_alive(shard) else None

    def current(self, address: str) -> bool:
        return self.vouched_at(address) is not None


def liveness_from(*, now: float, shards: int, beats_raw: Sequence[Any]) -> Liveness:
    """The rule applied to the raw heartbeats of shards 0..shards-1."""
    raw = tuple(_text(beats_raw[s]) if s < len(beats_raw) else None for s in range(shards))
    return Liveness(now=now, shards=shards, beats=tuple(beat_time(r) for r in raw), raw=raw)


def _shard_index(key: bytes | str) -> int | None:
    """The shard of a heartbeat key (module docstring, 2), None for another key."""
    base = events.heartbeat_key()
    name = _text(key) or ""
    if name == base:
        return 0
    if name.startswith(base + ":") and name[len(base) + 1 :].isdigit():
        return int(name[len(base) + 1 :])
    return None


def _inferred(keys: Iterable[bytes | str]) -> int:
    found = [s for s in map(_shard_index, keys) if s is not None]
    return max(found) + 1 if found else 1


def liveness_read(client: redis.Redis | None = None) -> Liveness:
    """The monitor's liveness now (two round trips; raises RedisError)."""
    client = client or events.sync_redis()
    shards_raw = client.get(events.shards_key())
    shards = _shard_count(shards_raw)
    if shards is None:
        shards = _inferred(client.scan_iter(match=events.heartbeat_key() + "*", count=1000))
    beats = client.mget([events.heartbeat_key(s) for s in range(shards)])
    return liveness_from(now=time.time(), shards=shards, beats_raw=beats)


async def liveness_read_async(client: aioredis.Redis) -> Liveness:
    """``liveness_read`` on an asyncio client (the web process's fan-out)."""
    shards_raw = await client.get(events.shards_key())
    shards = _shard_count(shards_raw)
    if shards is None:
        keys = [k async for k in client.scan_iter(match=events.heartbeat_key() + "*", count=1000)]
        shards = _inferred(keys)
    beats = await client.mget([events.heartbeat_key(s) for s in range(shards)])
    return liveness_from(now=time.time(), shards=shards, beats_raw=beats)


# --- values ------------------------------------------------------------------------------------


def values_read(names: Iterable[str]) -> dict[str, Entry]:
    """The cached entries of ``names`` (uncached ones left out), in ONE HMGET."""
    unique = list(dict.fromkeys(names))
    if not unique:
        return {}
    raw = events.sync_redis().hmget(events.values_hash(), unique)
    return {n: unpack(events.data(d)) for n, d in zip(unique, raw, strict=True) if d is not None}


def current_entries(
    addresses: Sequence[str], *, liveness: Liveness | None = None
) -> dict[str, Entry]:
    """The cached entries of ``addresses`` that are current by the liveness rule: connected,
    and owned by a live shard. Everything else (missing, disconnected, a dead shard's) is left
    out for the caller to read directly."""
    liveness = liveness or liveness_read()
    if not liveness.any_alive:
        return {}
    everything = liveness.alive
    return {
        address: entry
        for address, entry in values_read(addresses).items()
        if entry.get("connected") and (everything or liveness.current(address))
    }


def _wire(data: bytes) -> dict[str, Any] | None:
    try:
        return values.wire_in_place(unpack(data))  # just decoded for this call: ours to convert
    except (ValueError, TypeError, msgpack.ExtraData, AttributeError):
        return None  # a corrupt entry is treated as not cached


def wire_read(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Wire entries (``values.to_wire``) of the cached ``names``, one HMGET; a corrupt entry
    counts as not cached (raises RedisError)."""
    unique = list(dict.fromkeys(names))
    if not unique:
        return {}
    raw = events.sync_redis().hmget(events.values_hash(), unique)
    out: dict[str, dict[str, Any]] = {}
    for name, data in zip(unique, raw, strict=True):
        if data is not None and (entry := _wire(events.data(data))) is not None:
            out[name] = entry
    return out


def wire_read_all() -> dict[str, dict[str, Any]]:
    """Every cached wire entry (raises RedisError)."""
    raw = events.sync_redis().hgetall(events.values_hash())
    out: dict[str, dict[str, Any]] = {}
    for name, data in raw.items():
        if (entry := _wire(events.data(data))) is not None:
            out[events.text(name)] = entry
    return out


def cached_count() -> int:
    """How many addresses the value hash holds (raises RedisError)."""
    return int(events.sync_redis().hlen(events.values_hash()))


async def wire_read_async(client: aioredis.Redis, names: list[str]) -> dict[str, dict[str, Any]]:
    """Wire entries of the cached ``names`` on an asyncio client, one HMGET (converted in
    place: the entries were just decoded for this call)."""
    if not names:
        return {}
    packed = await client.hmget(events.values_hash(), names)
    wire = values.wire_in_place
    return {
        n: wire(unpack(events.data(p))) for n, p in zip(names, packed, strict=True) if p is not None
    }


async def wire_read_all_async(client: aioredis.Redis) -> dict[str, dict[str, Any]]:
    raw = await client.hgetall(events.values_hash())
    wire = values.wire_in_place
    return {events.text(k): wire(unpack(events.data(v))) for k, v in raw.items()}


def cache_scan(max_age: float) -> tuple[list[str], list[str]]:
    """(disconnected, stale) addresses in the value hash: stale = connected but not updated
    for ``max_age`` s; unreadable entries count as stale (raises RedisError)."""
    cutoff = time.time() - max_age
    disconnected: list[str] = []
    stale: list[str] = []
    for raw_name, data in events.sync_redis().hscan_iter(events.values_hash(), count=5000):
        name = raw_name.decode()
        try:
            entry = unpack(data)
            connected = entry.get("connected")
            updated = float(entry["updated_at"])
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.ExtraData):
            stale.append(name)
            continue
        if not connected:
            disconnected.append(name)
        elif not updated >= cutoff:  # also NaN
            stale.append(name)
    return disconnected, stale


def disconnected_read() -> list[str]:
    """The addresses the monitor marked disconnected (raises RedisError)."""
    return [events.text(m) for m in events.sync_redis().smembers(events.disconnected_set())]


# --- the monitor's own state -------------------------------------------------------------------


@dataclass
class MonitorState:
    """Liveness, cache size, disconnected count, shard 0's leader and watchdog statistics, read
    in one pipelined round trip after the liveness read."""

    liveness: Liveness
    cached: int
    disconnected: int
    leader: str | None
    stats: dict[str, str]


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k) or "": _text(v) or "" for k, v in raw.items()}


def monitor_state() -> MonitorState:
    """What the monitor last wrote (raises RedisError)."""
    liveness = liveness_read()
    pipe = events.sync_redis().pipeline(transaction=False)
    pipe.hlen(events.values_hash())
    pipe.scard(events.disconnected_set())
    pipe.get(events.lock_key())
    pipe.hgetall(events.stats_key())
    cached, disconnected, leader, stats = pipe.execute()
    return MonitorState(
        liveness=liveness,
        cached=cached,
        disconnected=disconnected,
        leader=_text(leader),
        stats=_decoded(stats),
    )


def stats_read() -> dict[str, str]:
    """Shard 0's watchdog statistics (raises RedisError)."""
    return _decoded(events.sync_redis().hgetall(events.stats_key()))


def stats_recount(*, disconnected: int, stale: int) -> dict[str, str]:
    """Store freshly counted disconnected/stale figures in the statistics; all of them after."""
    pipe = events.sync_redis().pipeline(transaction=False)
    pipe.hset(
        events.stats_key(),
        mapping={
            "disconnected_count": disconnected,
            "stale_count": stale,
            "last_check": time.time(),
        },
    )
    pipe.hincrby(events.stats_key(), "check_count", 1)
    pipe.hgetall(events.stats_key())
    return _decoded(pipe.execute()[-1])

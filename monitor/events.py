"""The one place that names Redis keys and the update channel (contract §9, DESIGN.md).

Every name starts with ``settings.REDIS_PREFIX`` (read at call time, so tests and several
deployments on one Redis never see each other's keys or messages).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import msgpack
import redis
import redis.asyncio as aioredis
from django.conf import settings


def key(*parts: str) -> str:
    return settings.REDIS_PREFIX + ":".join(parts)


def values_hash() -> str:
    """HASH address -> packed entry (monitor.values)."""
    return key("pv", "values")


def disconnected_set() -> str:
    """SET of addresses currently disconnected."""
    return key("pv", "disconnected")


def updates_channel() -> str:
    """Pub/sub channel of update batches from the monitor."""
    return key("pv", "updates")


def update_batch(now: float, packed: dict[str, bytes]) -> bytes:
    """The message published on ``updates_channel``: msgpack ``{"t": now, "u": {address:
    entry}}``, built from entries already packed for the HSET (``values.pack``), so each
    entry is encoded once."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join(
        [
            packer.pack_map_header(2),
            packer.pack("t"),
            packer.pack(now),
            packer.pack("u"),
            packer.pack_map_header(len(packed)),
            *(packer.pack(name) + data for name, data in packed.items()),
        ]
    )


def heartbeat_key(shard: int = 0) -> str:
    """STRING epoch seconds of the monitor leader's last heartbeat."""
    return key("monitor", "heartbeat") if shard == 0 else key("monitor", "heartbeat", str(shard))


def shards_key() -> str:
    """STRING how many shards the monitor runs as (``--shards``), written with each heartbeat;
    the liveness rule (monitor.cache) reads it."""
    return key("monitor", "shards")


def lock_key(shard: int = 0) -> str:
    """STRING leader lock of one monitor shard: holder id, SET NX PX, renewed."""
    return key("monitor", "lock", str(shard))


def stats_key(shard: int = 0) -> str:
    """HASH watchdog statistics of one monitor shard."""
    return key("monitor", "stats", str(shard))


def circuits_key() -> str:
    """HASH IOC name -> packed circuit-breaker state."""
    return key("monitor", "circuits")


def circuits_forced_key() -> str:
    """HASH IOC name -> "open"/"closed": only the breakers an operator forced, so every process
    can re-read them each second (``circuits_key`` holds one entry per IOC ever called: 50K)."""
    return key("monitor", "circuits-forced")


def catalog_version_key() -> str:
    """STRING bumped whenever the PV catalog changes, so the monitor reloads at once."""
    return key("catalog", "version")


@cache
def _client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return redis.Redis(connection_pool=pool)


def text(raw: bytes | str) -> str:
    """A Redis answer as text (our clients never set ``decode_responses``: answers are bytes,
    though redis-py types them ``bytes | str``)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def data(raw: bytes | str) -> bytes:
    """A Redis answer as bytes (see ``text``)."""
    return raw if isinstance(raw, bytes) else raw.encode()


def fields(mapping: Mapping[str, Any]) -> Mapping[Any, Any]:
    """``mapping`` as redis-py's ``hset`` types it (its key type is a union, and Mapping keys
    are invariant, so a ``dict[str, bytes]`` does not check as one)."""
    return mapping


def sync_redis() -> redis.Redis:
    """The process-wide client (thread-safe; its pool hands each command a connection).
    One per URL, kept: building a ``redis.Redis`` costs ~50 µs, which adds up on paths that
    ask for it per PV or per message."""
    return _client(settings.REDIS_URL)


def async_redis(max_connections: int = 32) -> aioredis.Redis:
    """A new asyncio client (one per event loop; close it when done).

    Its pool blocks (up to 10 s) when all connections are busy rather than failing, so a burst
    of callers (100 sockets subscribing at once) queues instead of erroring.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=max_connections, timeout=10, socket_connect_timeout=2
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool

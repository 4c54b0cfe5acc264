"""The monitor process: every catalog address live in Redis (DESIGN.md "Live values").

``run()`` waits for the shard's leader lock (standby), then as leader:

1. loads every address of its shard of the catalog (monitor.services) and subscribes all of
   them through one ``monitor.bridge.MonitorClient`` (Channel Access and pvAccess);
2. keeps the latest entry per address in ``pending`` (a dict keyed by address: a burst
   coalesces, latest value wins, memory is bounded by the catalog size) and flushes it every
   ``MONITOR_FLUSH_INTERVAL`` as ONE pipeline: HSET of packed entries, SADD/SREM of the
   disconnected set, and ONE published batch ``{"t": epoch, "u": {address: entry}}``;
3. every ``MONITOR_HEARTBEAT_INTERVAL`` renews the lock, writes the heartbeat and the watchdog
   stats, and marks addresses that never connected as disconnected;
4. every ``MONITOR_CATALOG_POLL`` checks the catalog and subscribes/drops what changed.

SIGTERM/SIGINT set the stop event: the last batch is flushed and the lock released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections

from monitor import events, services, values
from monitor.bridge import MonitorClient
from monitor.cache import shard_of
from monitor.values import Entry

log = logging.getLogger(__name__)

NEVER_CONNECTED = "not connected (no IOC answered the search)"
MAX_ERRORS = 10

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def _db(fn: Callable[..., Any], **kwargs: Any) -> Any:
    close_old_connections()
    try:
        return fn(**kwargs)
    finally:
        close_old_connections()


async def _catalog(shards: int, shard: int) -> set[str]:
    return await sync_to_async(_db)(services.monitor_addresses, shards=shards, shard=shard)


async def _fingerprint() -> tuple[int, str]:
    return await sync_to_async(_db)(services.catalog_fingerprint)


class Monitor:
    """The leader's state: subscriptions, latest entries, the pending batch, statistics."""

    def __init__(self, *, redis_client: aioredis.Redis, client: Any, shards: int, shard: int):
        self.redis = redis_client
        self.client = client
        self.shards = shards
        self.shard = shard
        self.addresses: set[str] = set()
        self.latest: dict[str, Entry] = {}
        self.pending: dict[str, Entry] = {}
        self.disconnected: set[str] = set()  # as written to Redis
        self.waiting: dict[str, float] = {}  # address -> when subscribed, until a first entry
        self.ever_lost: set[str] = set()
        self.errors: list[str] = []
        self.updates_total = 0
        self.updates_dropped = 0  # superseded by a newer value before they were flushed
        self.successful_reconnects = 0
        self.check_count = 0
        self.filled = False
        self.started_at = time.time()
        client.on_update = self.on_update
        client.on_connection = self.on_connection

    # --- callbacks from the CA client (hot path: no I/O, no allocation beyond the dict) -----
    def on_update(self, name: str, entry: Entry) -> None:
        if name not in self.addresses:
            return
        if name in self.pending:
            self.updates_dropped += 1
        self.pending[name] = entry
        self.latest[name] = entry
        self.updates_total += 1
        if self.waiting:
            self.waiting.pop(name, None)

    def on_connection(self, name: str, connected: bool) -> None:
        if name not in self.addresses:
            return
        if connected:
            if name in self.ever_lost:
                self.ever_lost.discard(name)
                self.successful_reconnects += 1
            return
        self.ever_lost.add(name)
        last = self.latest.get(name) or {"value": None}
        entry: Entry = {
            **last,
            "connected": False,
            "updated_at": time.time(),
            "error": values.DISCONNECTED,
        }
        self.pending[name] = entry
        self.latest[name] = entry

    def error(self, text: str) -> None:
        log.warning("%s", text)
        self.errors = [*self.errors, f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}"]
        self.errors = self.errors[-MAX_ERRORS:]

    # --- catalog ----------------------------------------------------------------------------
    async def load(self, addresses: set[str]) -> None:
        """Subscribe what is new, drop what left the catalog (and its Redis fields)."""
        added = addresses - self.addresses
        removed = self.addresses - addresses
        self.addresses = addresses
        if removed:
            self.client.clear(removed)
            for name in removed:
                self.pending.pop(name, None)
                self.latest.pop(name, None)
                self.waiting.pop(name, None)
                self.ever_lost.discard(name)
            self.disconnected -= removed
            await self._delete(removed)
            log.info("catalog: %d addresses removed", len(removed))
        if added:
            now = time.monotonic()
            for name in added:
                self.waiting[name] = now
            self.client.subscribe(sorted(added))
            log.info("catalog: %d addresses added (%d in all)", len(added), len(addresses))

    async def _delete(self, names: set[str]) -> None:
        items = list(names)
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(items), 10_000):
            chunk = items[start : start + 10_000]
            pipe.hdel(events.values_hash(), *chunk)
            pipe.srem(events.disconnected_set(), *chunk)
        await pipe.execute()

    async def prune(self) -> None:
        """Delete this shard's cache fields that are not in the catalog (from an earlier run)."""
        stale = set()
        for field in await self.redis.hkeys(events.values_hash()):
            name = events.text(field)
            if shard_of(name, self.shards) == self.shard and name not in self.addresses:
                stale.add(name)
        for member in await self.redis.smembers(events.disconnected_set()):
            name = events.text(member)
            if shard_of(name, self.shards) == self.shard and name not in self.addresses:
                stale.add(name)
        if stale:
            await self._delete(stale)

    # --- flush --------------------------------------------------------------------------------
    async def flush(self) -> int:
        """Write what changed since the last flush as one pipeline; the number of entries."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        now = time.time()
        packed = {name: values.pack(entry) for name, entry in batch.items()}
        gone = [
            n for n, e in batch.items() if not e.get("connected") and n not in self.disconnected
        ]
        back = [n for n, e in batch.items() if e.get("connected") and n in self.disconnected]
        message = events.update_batch(now, packed)
        # MULTI/EXEC: a reader never sees an entry without its mark in the disconnected set
        # (a health check or a bench counting "all values in, none disconnected" did).
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(events.values_hash(), mapping=events.fields(packed))
        if gone:
            pipe.sadd(events.disconnected_set(), *gone)
        if back:
            pipe.srem(events.disconnected_set(), *back)
        pipe.publish(events.updates_channel(), message)
        try:
            await pipe.execute()
        except redis.RedisError as exc:
            # Keep what was not written; newer entries that came meanwhile win.
            self.pending = {**batch, **self.pending}
            self.error(f"flush failed: {exc}")
            return 0
        self.disconnected.update(gone)
        self.disconnected.difference_update(back)
        if not self.filled and len(self.latest) >= len(self.addresses):
            self.filled = True
            log.info(
                "all %d addresses in Redis %.2f s after start",
                len(self.addresses),
                time.time() - self.started_at,
            )
        return len(batch)

    # --- watchdog -----------------------------------------------------------------------------
    def mark_never_connected(self, grace: float) -> None:
        """Addresses with no entry ``grace`` seconds after subscribing: written disconnected."""
        limit = time.monotonic() - grace
        late = [name for name, since in self.waiting.items() if since <= limit]
        now = time.time()
        for name in late:
            del self.waiting[name]
            if name not in self.latest:
                entry: Entry = {
                    "value": None,
                    "connected": False,
                    "updated_at": now,
                    "error": NEVER_CONNECTED,
                }
                self.pending[name] = entry  # not in ``latest``: it holds no value

    def stats(self, holder: str) -> dict[str, str | int | float]:
        """The watchdog figures; ``stale_count``: connected but no value received yet."""
        up = self.addresses & self.client.connected_names()
        connected = len(up)
        stale = len(up - self.latest.keys())
        self.check_count += 1
        return {
            "leader": holder,
            "started_at": self.started_at,
            "last_check": time.time(),
            "check_count": self.check_count,
            "monitored_pvs": len(self.addresses),
            "connected_pvs": connected,
            "disconnected_count": len(self.addresses) - connected,
            "stale_count": stale,
            "reconnect_attempts": self.client.disconnects,
            "successful_reconnects": self.successful_reconnects,
            "failed_reconnects": self.client.failed_connects,
            "last_errors": json.dumps(self.errors),
            "updates_total": self.updates_total,
            "updates_dropped": self.updates_dropped,
        }


def holder_id() -> str:
    """Who holds the lock: host, pid and a random tag (shown in the stats)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


_TASK_STOP_TIMEOUT = 5.0


def _cancelling() -> bool:
    """Whether this task was asked to stop: redis-py can swallow a ``cancel()`` delivered
    while it reconnects, so a loop that catches Redis errors checks this itself."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))
    return stop.is_set()


async def run(
    *,
    shards: int = 1,
    shard: int = 0,
    max_seconds: float | None = None,
    stop: asyncio.Event | None = None,
    client_factory: Callable[[], Any] = MonitorClient,
) -> int:
    """Run the monitor (standby until it holds the lock) until stopped; the exit code."""
    if not 0 <= shard < shards:
        raise ValueError(f"--shard must be in 0..{shards - 1}")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    if max_seconds is not None:
        loop.call_later(max_seconds, stop.set)
    holder = holder_id()
    lock = events.lock_key(shard)
    ttl_ms = int(settings.MONITOR_LOCK_TTL * 1000)
    client_redis = events.async_redis()
    try:
        while not stop.is_set():
            try:
                acquired = await client_redis.set(lock, holder, nx=True, px=ttl_ms)
            except redis.RedisError as exc:
                log.warning("cannot reach Redis for the lock: %s", exc)
                acquired = False
            if not acquired:
                await _wait(stop, min(1.0, settings.MONITOR_LOCK_TTL / 4))
                continue
            log.info("shard %d/%d: leader (%s)", shard, shards, holder)
            try:
                await _lead(client_redis, holder, shards, shard, stop, client_factory)
            except Exception:  # e.g. the DB is down at start: let go and try again
                log.exception("shard %d: monitoring failed; retrying", shard)
                with contextlib.suppress(redis.RedisError):
                    await client_redis.eval(_RELEASE, 1, lock, holder)
                await _wait(stop, 2.0)
    finally:
        with contextlib.suppress(redis.RedisError):
            await client_redis.eval(_RELEASE, 1, lock, holder)
        await client_redis.aclose()
        await sync_to_async(connections.close_all)()  # the DB thread's connection
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return 0


async def _lead(
    client_redis: aioredis.Redis,
    holder: str,
    shards: int,
    shard: int,
    stop: asyncio.Event,
    client_factory: Callable[[], Any],
) -> None:
    """Monitor as leader until ``stop`` or until the lock is lost."""
    lost = asyncio.Event()
    async with client_factory() as client:
        monitor = Monitor(redis_client=client_redis, client=client, shards=shards, shard=shard)
        await monitor.load(await _catalog(shards, shard))
        await monitor.prune()
        tasks = [
            asyncio.create_task(_flush_loop(monitor), name="monitor-flush"),
            asyncio.create_task(_heartbeat_loop(monitor, holder, shard, lost), name="heartbeat"),
            asyncio.create_task(_catalog_loop(monitor, shards, shard), name="monitor-catalog"),
        ]
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
        try:
            await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, *waiters]:
                task.cancel()
            # Bounded: a task stuck in a library that swallowed its cancel must not keep this
            # process from giving up leadership (the loops also check _cancelling()).
            done, pending = await asyncio.wait(tasks, timeout=_TASK_STOP_TIMEOUT)
            for task in pending:
                log.error("monitor task %s did not stop; abandoned", task.get_name())
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("monitor task %s failed", task.get_name(), exc_info=task.exception())
            await monitor.flush()  # the last batch
    if lost.is_set():
        log.warning("shard %d: lost the leader lock; back to standby", shard)


async def _flush_loop(monitor: Monitor) -> None:
    interval = settings.MONITOR_FLUSH_INTERVAL
    while not _cancelling():
        started = time.monotonic()
        await monitor.flush()
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def _heartbeat_loop(monitor: Monitor, holder: str, shard: int, lost: asyncio.Event) -> None:
    interval = settings.MONITOR_HEARTBEAT_INTERVAL
    ttl_ms = int(settings.MONITOR_LOCK_TTL * 1000)
    grace = max(settings.EPICS_CONNECT_TIMEOUT, 1.0)
    while not _cancelling():
        try:
            renewed = await monitor.redis.eval(_RENEW, 1, events.lock_key(shard), holder, ttl_ms)
            if not renewed:
                lost.set()
                return
            monitor.mark_never_connected(grace)
            pipe = monitor.redis.pipeline(transaction=False)
            pipe.set(events.heartbeat_key(shard), str(time.time()))
            pipe.set(events.shards_key(), str(monitor.shards))
            pipe.hset(events.stats_key(shard), mapping=events.fields(monitor.stats(holder)))
            await pipe.execute()
        except redis.RedisError as exc:
            monitor.error(f"heartbeat failed: {exc}")
        await asyncio.sleep(interval)


async def _catalog_loop(monitor: Monitor, shards: int, shard: int) -> None:
    """Reload the catalog when it changed: the version key (bumped by pvs.services) is
    checked twice a second, the DB fingerprint every ``MONITOR_CATALOG_POLL``."""
    poll = settings.MONITOR_CATALOG_POLL
    tick = min(0.5, poll)
    while True:  # a stale pooled connection after a Redis restart fails once: try again
        try:
            version = await monitor.redis.get(events.catalog_version_key())
            fingerprint = await _fingerprint()
            break
        except Exception as exc:
            monitor.error(f"catalog check failed: {exc}")
            await asyncio.sleep(tick)
    checked = time.monotonic()
    while not _cancelling():
        await asyncio.sleep(tick)
        try:
            changed = False
            now_version = await monitor.redis.get(events.catalog_version_key())
            if now_version != version:
                version, changed = now_version, True
            if changed or time.monotonic() - checked >= poll:
                checked = time.monotonic()
                now_fingerprint = await _fingerprint()
                if now_fingerprint != fingerprint:
                    fingerprint, changed = now_fingerprint, True
            if changed:
                await monitor.load(await _catalog(shards, shard))
        except Exception as exc:  # the monitor must outlive a DB or Redis outage
            monitor.error(f"catalog reload failed: {exc}")

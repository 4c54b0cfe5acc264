"""Per-process fan-out of live values to WebSocket clients (DESIGN.md "WebSocket").

One listener per web process reads the monitor's update batches from Redis pub/sub. An
in-memory index maps each address to the local clients that want it; an update is encoded to
its wire form once -- as the JSON text of its ``"name":{...}`` member of a diff -- and stored in
each interested client's ``pending`` dict (latest value per PV wins), so a diff is a join of
ready text, not a JSON encoding per client. A flush loop every ``WEBSOCKET_BATCH_INTERVAL_MS``
sends each client one ``diff`` with its pending entries. A client whose previous send has not
finished is skipped until it has: its pending dict keeps coalescing, so its memory is bounded
by the number of PVs it subscribes to and it never delays the others. Every heartbeat interval
the credentials of the open sockets are re-checked in one pass (squirrel.auth): a socket whose
key was deactivated, or whose staff session ended, is dropped and closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import msgpack
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings

from monitor import cache, events
from monitor.values import wire_in_place
from squirrel.api import dumps, encode
from squirrel.auth import Credential, credentials_revoked

log = logging.getLogger(__name__)

Sender = Callable[[str], Awaitable[None]]  # sends one message, already JSON text
Closer = Callable[[int], Awaitable[None]]  # closes the socket with a code
POLICY_VIOLATION = 1008  # the close code of a socket refused or revoked


class Client:
    """One connected socket: what it wants, what is waiting for it, whether a send is in flight."""

    __slots__ = (
        "id", "send", "close", "credential", "wanted", "pending", "busy", "held", "sent_diffs",
        "skipped_flushes",
    )  # fmt: skip

    def __init__(
        self, send: Sender, close: Closer | None = None, credential: Credential | None = None
    ) -> None:
        self.id = uuid.uuid4().hex
        self.send = send
        self.close = close
        self.credential = credential  # re-checked while open; None: anonymous
        self.wanted: set[str] = set()
        self.pending: dict[str, bytes] = {}  # name -> b'"name":{wire entry}' (diff_text)
        self.busy = False  # a diff is being sent
        self.held = False  # an initial is being read and sent: no diff may overtake it
        self.sent_diffs = 0
        self.skipped_flushes = 0


STOP_TIMEOUT = 5.0  # seconds ``FanOut.stop`` waits for each step


class FanOut:
    """The process's listener, subscription index and flush loop (one per event loop)."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.index: dict[str, set[Client]] = {}
        self.monitor_heartbeat: float | None = None
        self.messages_received = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._redis: aioredis.Redis | None = None
        self._delivered = asyncio.Event()  # set by deliver(): something may be pending

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._tasks:
            return
        self._redis = events.async_redis()
        self._tasks = [
            asyncio.create_task(self._listen(), name="fanout-listen"),
            asyncio.create_task(self._flush_loop(), name="fanout-flush"),
            asyncio.create_task(self._heartbeat_loop(), name="fanout-heartbeat"),
            asyncio.create_task(self._recheck_loop(), name="fanout-recheck"),
        ]

    async def stop(self) -> None:
        """Cancel the loops and close Redis, each bounded (STOP_TIMEOUT): a loop caught inside
        a Redis or database call must not hold a shutdown (or a test's teardown) forever."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                log.warning("fan-out task %s still running after stop", task.get_name())
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(redis.aclose(), STOP_TIMEOUT)

    # -- clients and subscriptions ----------------------------------------------------------
    def add_client(
        self, send: Sender, *, close: Closer | None = None, credential: Credential | None = None
    ) -> Client:
        client = Client(send, close, credential)
        self.clients[client.id] = client
        self.start()
        return client

    def remove_client(self, client: Client) -> None:
        self.unsubscribe(client, list(client.wanted))
        self.clients.pop(client.id, None)

    def subscribe(self, client: Client, names: Iterable[str]) -> list[str]:
        added = []
        for name in names:
            if name not in client.wanted:
                client.wanted.add(name)
                self.index.setdefault(name, set()).add(client)
                added.append(name)
        return added

    def unsubscribe(self, client: Client, names: Iterable[str]) -> None:
        for name in names:
            client.wanted.discard(name)
            client.pending.pop(name, None)
            subscribers = self.index.get(name)
            if subscribers is not None:
                subscribers.discard(client)
                if not subscribers:
                    del self.index[name]

    @contextlib.asynccontextmanager
    async def holding(self, client: Client) -> AsyncIterator[None]:
        """No diff goes to ``client`` inside this block; its pending updates keep coalescing
        and follow once it ends. A subscribe reads and sends the ``initial`` inside it, so an
        update delivered meanwhile can never reach the client before (older) initial values."""
        client.held = True
        try:
            yield
        finally:
            client.held = False
            if client.pending:
                self._delivered.set()

    # -- reading the cache ----------------------------------------------------------------
    async def current(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Cached wire entries of ``names`` (uncached names left out), one HMGET."""
        assert self._redis is not None
        return await cache.wire_read_async(self._redis, names)

    async def everything(self) -> dict[str, dict[str, Any]]:
        assert self._redis is not None
        return await cache.wire_read_all_async(self._redis)

    # -- the three loops --------------------------------------------------------------------
    def deliver(self, updates: dict[str, Any]) -> None:
        """Route one batch of entries (freshly decoded: converted in place) to the pending
        dicts of interested clients."""
        index = self.index
        for name, entry in updates.items():
            subscribers = index.get(name)
            if subscribers:
                member = encode(name) + b":" + encode(wire_in_place(entry))
                for client in subscribers:
                    client.pending[name] = member
                self._delivered.set()

    async def _listen(self) -> None:
        while True:
            pubsub = None
            try:
                assert self._redis is not None
                pubsub = self._redis.pubsub(
                    ignore_subscribe_messages=True, push_handler_func=_push_as_is
                )
                await pubsub.subscribe(events.updates_channel())
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    self.messages_received += 1
                    try:
                        batch = msgpack.unpackb(message["data"], raw=False)
                        self.deliver(batch.get("u", {}))
                    except Exception:
                        log.exception("undecodable update batch skipped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("update listener lost Redis (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    async def _send_diff(self, client: Client, data: dict[str, bytes]) -> None:
        try:
            await client.send(diff_text(data, time.time()))
            client.sent_diffs += 1
        except Exception:
            log.debug("diff to client %s failed", client.id, exc_info=True)
        finally:
            client.busy = False
            if client.pending:  # coalesced while this send was in flight
                self._delivered.set()

    async def _flush_loop(self) -> None:
        """A diff goes out as soon as there is something to send, but at most one per
        interval: an update arriving after a quiet spell is not held back for a tick, and a
        burst is still batched per interval."""
        interval = settings.WEBSOCKET_BATCH_INTERVAL_MS / 1000
        flushed = 0.0
        while True:
            await self._delivered.wait()
            await asyncio.sleep(max(0.0, flushed + interval - time.monotonic()))
            self._delivered.clear()
            flushed = time.monotonic()
            for client in list(self.clients.values()):
                if not client.pending:
                    continue
                if client.busy or client.held:
                    client.skipped_flushes += 1
                    continue
                data, client.pending = client.pending, {}
                client.busy = True
                asyncio.create_task(self._send_diff(client, data))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(settings.WEBSOCKET_HEARTBEAT_INTERVAL)
            now = time.time()
            try:
                assert self._redis is not None
                liveness = await cache.liveness_read_async(self._redis)
                self.monitor_heartbeat, alive = liveness.oldest, liveness.alive
            except Exception:
                self.monitor_heartbeat, alive = None, False
            message = dumps(
                {
                    "type": "heartbeat",
                    "timestamp": now,
                    "monitor_heartbeat": self.monitor_heartbeat,
                    "monitor_alive": alive,
                }
            )  # encoded once for every client
            for client in list(self.clients.values()):
                if not client.busy:
                    asyncio.create_task(_quiet(client.send(message)))

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(settings.WEBSOCKET_HEARTBEAT_INTERVAL)
            await self.recheck()

    async def recheck(self) -> None:
        """Drop and close the clients whose credential was revoked (one pass over all)."""
        credentials = {c.credential for c in self.clients.values() if c.credential is not None}
        if not credentials:
            return
        try:
            revoked = await database_sync_to_async(credentials_revoked)(credentials)
        except Exception as exc:  # the database is away: keep serving, check next time
            log.warning("credential re-check failed (%s); sockets stay open", exc)
            return
        for client in list(self.clients.values()):
            credential = client.credential
            if credential is None or credential not in revoked:
                continue
            kind = "API key" if credential.api_key_id else "session"
            log.info("closing live socket %s: its %s was revoked", client.id, kind)
            self.remove_client(client)
            if client.close is not None:
                asyncio.create_task(_quiet(client.close(POLICY_VIOLATION)))

    def status(self) -> dict[str, Any]:
        """GET /v1/ws/status (contract §4.6)."""
        return {
            "instanceId": settings.INSTANCE_ID,
            "multiInstanceEnabled": False,
            "activeConnections": len(self.clients),
            "totalSubscriptions": sum(len(c.wanted) for c in self.clients.values()),
            "uniquePVsSubscribed": len(self.index),
            "bufferSize": sum(len(c.pending) for c in self.clients.values()),
            "batchIntervalMs": settings.WEBSOCKET_BATCH_INTERVAL_MS,
        }


def diff_text(members: dict[str, bytes], timestamp: float) -> str:
    """The ``diff`` message (contract §4.3) from pre-encoded members: the same JSON as
    ``dumps({"type": "diff", "data": {...}, "count": n, "timestamp": t})``."""
    return b"".join(
        (
            b'{"type":"diff","data":{',
            b",".join(members.values()),
            b'},"count":%d,"timestamp":%s}' % (len(members), encode(timestamp)),
        )
    ).decode()


async def _push_as_is(response: Any) -> Any:
    """Pub/sub push handler: the message as it came. redis-py's default handler formats every
    message into a debug log line (``str()`` of 1 MB of batch: 14 ms) even with debug off."""
    return response


async def _quiet(awaitable: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await awaitable


_fanouts: dict[asyncio.AbstractEventLoop, FanOut] = {}


def fanout() -> FanOut:
    """This event loop's FanOut (a web process serves all its sockets from one loop)."""
    loop = asyncio.get_running_loop()
    instance = _fanouts.get(loop)
    if instance is None:
        instance = _fanouts[loop] = FanOut()
    return instance


def fanout_status() -> dict[str, Any]:
    """Status of the fan-outs of this process (summed; normally there is one loop)."""
    total: dict[str, Any] = FanOut().status()
    for instance in list(_fanouts.values()):
        for key, value in instance.status().items():
            if isinstance(value, int) and not isinstance(value, bool) and key != "batchIntervalMs":
                total[key] += value
    return total

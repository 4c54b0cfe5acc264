"""Squirrel's pvAccess client: the only module that imports the PVA binding (p4p, DESIGN.md).

Why p4p (measured here at 50K channels against the sim IOC's QSRV, ``bench/pva.py``; the
figures are in the README): see ``README.md`` "pvAccess". We use its *raw* client
(``p4p.client.raw``), not its thread or asyncio wrappers: those run one Python task or work-queue
item per update and per operation, where the raw client calls one small handler from the
binding's own thread and leaves the values in the subscription's FIFO.

1. **One inbox, no wake-ups.** Every handler the binding calls (on its thread) only appends
   to ``_Inbox``; the loop drains it every ``DRAIN_INTERVAL`` (half the monitor's flush
   interval), popping every subscription's FIFO and finishing every operation on the loop's
   thread, so the rest of Squirrel sees this client exactly like ``monitor.ca.CAClient``
   (same methods, same ``Entry`` values, same callbacks). Waking the loop per update or per
   finished operation (``call_soon_threadsafe``) cost more than the update itself: at 5K
   updates/s a fifth of a core (bench/pva.py); a finished get now waits at most 50 ms.
2. **Subscriptions are paced**: ``PACE`` new channels per ``PACE_INTERVAL``, and never more
   than ``SEARCH_LIMIT`` subscribed and not yet delivering (searches in flight, globally);
   a channel that has not delivered ``RESUBSCRIBE_AFTER`` seconds after subscribing is
   subscribed anew (its search may have been lost), with the limit still held.
3. **Disconnects within 5 s**: a closed TCP connection (IOC killed or restarted) is reported by
   the binding at once; a silent one by its echo timeout, which we set to ``CONN_TMO`` unless
   ``EPICS_PVA_CONN_TMO`` is set. The binding re-connects and re-subscribes by itself.
4. **Reads and puts per PV with a timeout**: one operation per name, in windows of at most
   ``concurrency``; whatever has not answered when the window's time is up is cancelled and
   gets its own error entry or result, so one dead name never loses the others.
5. **Values** (``monitor.pva_values.entry_of``) in the one encoding (``monitor.values``):
   NTScalar and NTScalarArray as CA's (unsigned stays unsigned; arrays as lists), NTEnum
   exactly as a CA enum (``value`` the label, ``index`` the index, ``enum_strs`` the
   choices), alarm and timeStamp in CA's fields (the alarm message names the CA status),
   display and control as CA's metadata; an NTTable as ``values.table_value``, any other
   structure as JSON (``values.STRUCT``, not restorable). NaN/Inf follow the CA rule.

Names carry ``pva://`` (stripped on the wire). Honours ``EPICS_PVA_ADDR_LIST``,
``EPICS_PVA_AUTO_ADDR_LIST``, ``EPICS_PVA_NAME_SERVERS``, ``EPICS_PVA_SERVER_PORT`` and
``EPICS_PVA_BROADCAST_PORT`` (read by the binding from the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from p4p import Value
from p4p.client import raw

from monitor import values
from monitor.circuits import Breakers, ioc_name
from monitor.pva_values import entry_of, kind_of, meta_of
from monitor.values import Entry

log = logging.getLogger(__name__)

SCHEME = "pva://"
REQUEST = "field(value,alarm,timeStamp,display,control)"
PUT_WAIT = "field()record[block=true]"
PUT_NOWAIT = "field()record[block=false]"
PACE = 2500  # new subscriptions per PACE_INTERVAL (measured: 50K fill 13 s vs 17.5 s at 1000)
PACE_INTERVAL = 0.1
SEARCH_LIMIT = 10000  # subscribed channels without a first value, at most
RESUBSCRIBE_AFTER = 10.0
DRAIN_INTERVAL = 0.05  # s; subscription values wait at most this long in the inbox
CONN_TMO = 3.5  # s; the binding answers a silent server within 4/3 of it (< 5 s)

TIMED_OUT = "timed out"
NO_ANSWER = "no answer in time (name not found, or not connected)"
SENT_TIMED_OUT = "put sent, no completion in time (the IOC may have applied it)"
CIRCUIT_OPEN = "circuit breaker open for IOC {ioc}"
NOT_PVA = "not a pva:// address"


@cache
def _request(text: str) -> Value:
    """A pvRequest parsed once: the binding parses a text request on every operation, which
    was a sixth of a 50K read's time."""
    return raw.Context.makeRequest(text)


def _result(code: int, message: str, value: Any) -> Any:
    """An operation's outcome as the binding's own handler wrapper (``raw.unwrapHandler``)
    gives it: RemoteError, Cancelled, the builder's exception, or the value (None for a
    put). Decoded here, on the loop, instead of in a wrapper per operation on its thread."""
    if code == 0:
        return raw.RemoteError(message)
    if code == 1:
        return raw.Cancelled()
    if code == 2:
        kind, arg, traceback = value
        return kind(arg).with_traceback(traceback)
    return value


def wire_name(name: str) -> str | None:
    """The PV name on the wire, or None when ``name`` is not a pva:// address."""
    return name[len(SCHEME) :] if name.startswith(SCHEME) else None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """One put's outcome, as ``monitor.ca.WriteResult`` (``monitor.bridge.PutResult`` reads
    both the same way)."""

    name: str
    ok: bool
    error: str | None = None
    timed_out: bool = False
    unknown: bool = False


def _error_entry(error: str) -> Entry:
    return {"value": None, "connected": False, "updated_at": time.time(), "error": error}


# --- the client ---------------------------------------------------------------------------------


class _Inbox:
    """Items appended from the binding's threads, handled on the loop every ``DRAIN_INTERVAL``
    (module docstring, 1). ``deque.append`` and ``popleft`` are atomic: no lock."""

    def __init__(self, handle: Callable[[Any], None]) -> None:
        self.handle = handle
        self.items: deque[Any] = deque()

    def put(self, item: Any) -> None:
        self.items.append(item)

    def drain(self) -> None:
        items = self.items
        for _ in range(len(items)):  # what comes meanwhile waits for the next drain
            self.handle(items.popleft())


class _Channel:
    __slots__ = ("connected", "kind", "meta", "name", "since", "sub", "wire")

    def __init__(self, name: str, wire: str) -> None:
        self.name = name
        self.wire = wire
        self.sub: Any = None
        self.kind: str | None = None
        self.meta: dict[str, Any] | None = None
        self.connected = False
        self.since = 0.0  # when last subscribed (monotonic)


class _Op:
    """One get or put in flight."""

    __slots__ = ("done", "name", "op", "result", "sent", "batch")

    def __init__(self, name: str, batch: _Batch) -> None:
        self.name = name
        self.batch = batch
        self.op: Any = None
        self.result: Any = None
        self.done = False
        self.sent = False


class _Batch:
    def __init__(self, size: int) -> None:
        self.remaining = size
        self.event = asyncio.Event()

    def finish(self, op: _Op, result: Any) -> None:
        if op.done:
            return
        op.done, op.result = True, result
        self.remaining -= 1
        if self.remaining <= 0:
            self.event.set()


class PVAClient:
    """A pvAccess client for many channels, with ``monitor.ca.CAClient``'s interface."""

    def __init__(
        self,
        *,
        on_update: Callable[[str, Entry], None] | None = None,
        on_connection: Callable[[str, bool], None] | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.on_update = on_update
        self.on_connection = on_connection
        self.breakers = breakers
        self.channels: dict[str, _Channel] = {}
        self.queued: deque[_Channel] = deque()  # to subscribe, paced
        self.waiting: dict[str, _Channel] = {}  # subscribed, no value yet (searches in flight)
        self.disconnects = 0
        self.failed_connects = 0
        self.resubscribes = 0
        self.context: Any = None
        self.inbox: _Inbox | None = None
        self.tasks: list[asyncio.Task] = []

    # --- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> PVAClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self.start_now()

    def start_now(self) -> None:
        """``start`` from synchronous code on the running loop (a client made on demand)."""
        conf = {} if "EPICS_PVA_CONN_TMO" in os.environ else {"EPICS_PVA_CONN_TMO": str(CONN_TMO)}
        self.context = raw.Context("pva", conf=conf or None, useenv=True, nt=False)
        self.inbox = _Inbox(self._handle)
        self.tasks.append(asyncio.create_task(self._pace_loop(), name="pva-pace"))
        self.tasks.append(asyncio.create_task(self._drain_loop(), name="pva-drain"))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for ch in self.channels.values():
            if ch.sub is not None:
                ch.sub.close()
                ch.sub = None
        self.channels.clear()
        if self.context is not None:
            self.context.close()
            self.context = None

    # --- monitoring -----------------------------------------------------------------------------
    def subscribe(
        self,
        names: Iterable[str],
        on_update: Callable[[str, Entry], None] | None = None,
        on_connection: Callable[[str, bool], None] | None = None,
    ) -> None:
        """Monitor ``names`` (paced, module docstring 2); returns at once."""
        if on_update is not None:
            self.on_update = on_update
        if on_connection is not None:
            self.on_connection = on_connection
        for name in names:
            wire = wire_name(name)
            if wire is None:
                if self.on_update is not None:
                    self.on_update(name, _error_entry(NOT_PVA))
                continue
            if name not in self.channels:
                ch = _Channel(name, wire)
                self.channels[name] = ch
                self.queued.append(ch)

    def clear(self, names: Iterable[str]) -> None:
        """Stop monitoring ``names``."""
        for name in names:
            ch = self.channels.pop(name, None)
            self.waiting.pop(name, None)
            if ch is not None and ch.sub is not None:
                ch.sub.close()
                ch.sub = None

    def is_connected(self, name: str) -> bool:
        ch = self.channels.get(name)
        return ch is not None and ch.connected

    def connected_names(self) -> set[str]:
        """Every connected name at once (as ``monitor.ca.CAClient.connected_names``)."""
        return {name for name, ch in self.channels.items() if ch.connected}

    async def _pace_loop(self) -> None:
        waiting = self.waiting
        while True:
            now = time.monotonic()
            for ch in [ch for ch in waiting.values() if now - ch.since > RESUBSCRIBE_AFTER]:
                if ch.sub is not None:
                    ch.sub.close()
                    ch.sub = None
                del waiting[ch.name]
                self.queued.append(ch)  # behind the others: dead names never starve them
                self.resubscribes += 1
            room = min(PACE, SEARCH_LIMIT - len(waiting))
            while room > 0 and self.queued:
                ch = self.queued.popleft()
                if self.channels.get(ch.name) is not ch or ch.sub is not None:
                    continue
                self._open(ch, now)
                room -= 1
            await asyncio.sleep(PACE_INTERVAL)

    async def _drain_loop(self) -> None:
        inbox = self.inbox
        assert inbox is not None
        while True:
            await asyncio.sleep(DRAIN_INTERVAL)
            if inbox.items:
                inbox.drain()

    def _open(self, ch: _Channel, now: float) -> None:
        inbox = self.inbox
        assert inbox is not None and self.context is not None
        ch.since = now
        self.waiting[ch.name] = ch
        ch.sub = raw.Subscription(
            self.context._ctxt, ch.wire, self.context._nt,
            handler=lambda ch=ch: inbox.put(ch), pvRequest=_request(REQUEST),
        )  # fmt: skip

    def _handle(self, item: Any) -> None:
        if isinstance(item, _Channel):
            self._pop(item)
        else:
            op, code, message, value = item
            op.batch.finish(op, _result(code, message, value))

    def _pop(self, ch: _Channel) -> None:
        sub = ch.sub
        if sub is None or self.channels.get(ch.name) is not ch:
            return
        now = time.time()
        for _ in range(64):  # a busy channel yields to the others
            item = raw._p4p.ClientMonitor.pop(sub)
            if item is None:
                return
            if isinstance(item, Value):
                self._update(ch, item, now)
            elif isinstance(item, raw.Disconnected):
                self._lost(ch)
            elif isinstance(item, raw.RemoteError) and self.on_update is not None:
                self.on_update(ch.name, {**_error_entry(str(item)), "updated_at": now})
        assert self.inbox is not None
        self.inbox.put(ch)  # more in the FIFO: after the others

    def _update(self, ch: _Channel, value: Value, now: float) -> None:
        if ch.kind is None:
            ch.kind = kind_of(value)
        if ch.meta is None:  # once per connection, as CA's DBR_CTRL read
            ch.meta = meta_of(value)
        if not ch.connected:
            ch.connected = True
            self.waiting.pop(ch.name, None)
            if self.on_connection is not None:
                self.on_connection(ch.name, True)
        if self.on_update is not None:
            self.on_update(ch.name, entry_of(value, ch.kind, ch.meta, now))

    def _lost(self, ch: _Channel) -> None:
        if ch.connected:
            ch.connected = False
            self.disconnects += 1
            ch.meta = None  # read again on reconnect, as CA's
            if self.on_connection is not None:
                self.on_connection(ch.name, False)

    # --- reads and writes (module docstring, 4) ---------------------------------------------
    async def connect(self, names: Iterable[str], timeout: float) -> set[str]:
        """Search and connect ``names`` (a read of each); the names that answered."""
        entries = await self.read_many(list(names), timeout)
        return {name for name, entry in entries.items() if entry.get("connected")}

    async def read_many(
        self, names: Iterable[str], timeout: float, *, concurrency: int | None = None
    ) -> dict[str, Entry]:
        """Read each name once; never raises for one PV (its entry says why)."""
        from django.conf import settings

        names = list(dict.fromkeys(names))
        out: dict[str, Entry] = {}
        usable = self._filter(names, out, lambda name, error: _error_entry(error))
        window = concurrency or settings.EPICS_CONCURRENCY
        for start in range(0, len(usable), window):
            out.update(await self._get_window(usable[start : start + window], timeout))
        self._record_breakers(out, lambda e: bool(e.get("connected")))
        return out

    async def _get_window(self, names: list[str], timeout: float) -> dict[str, Entry]:
        inbox, context = self.inbox, self.context
        assert inbox is not None and context is not None
        batch = _Batch(len(names))
        ops = []
        request = _request(REQUEST)
        for name in names:
            op = _Op(name, batch)
            op.op = raw._ClientOperation(
                context._ctxt, name[len(SCHEME) :],
                handler=lambda code, msg, val, op=op: inbox.put((op, code, msg, val)),
                pvRequest=request, get=True, put=False,
            )  # fmt: skip
            ops.append(op)
        await self._await(batch, timeout)
        now = time.time()
        out: dict[str, Entry] = {}
        for op in ops:
            result = op.result
            if not op.done:
                op.op.close()
                out[op.name] = _error_entry(NO_ANSWER)
            elif isinstance(result, Value):
                try:
                    kind = kind_of(result)
                    out[op.name] = entry_of(result, kind, meta_of(result), now)
                except Exception as exc:  # a value we cannot decode is that PV's error only
                    out[op.name] = _error_entry(f"cannot decode value: {exc}")
            else:
                out[op.name] = _error_entry(str(result) or type(result).__name__)
        _release(ops)
        return out

    async def write_many(
        self, values_by_name: dict[str, Any], timeout: float, wait: bool = True
    ) -> dict[str, WriteResult]:
        """Put each value (with completion when ``wait``): enums by label or index, arrays as
        lists, a table as ``values.table_value``. Never raises for one PV."""
        results: dict[str, WriteResult] = {}
        usable = self._filter(
            list(values_by_name), results, lambda name, error: WriteResult(name, False, error)
        )
        request = _request(PUT_WAIT if wait else PUT_NOWAIT)
        inbox, context = self.inbox, self.context
        assert inbox is not None and context is not None
        batch = _Batch(len(usable))
        ops = []
        for name in usable:
            op = _Op(name, batch)
            op.op = raw._ClientOperation(
                context._ctxt, name[len(SCHEME) :],
                handler=lambda code, msg, val, op=op: inbox.put((op, code, msg, val)),
                builder=_builder(op, values_by_name[name]), pvRequest=request, get=True,
                put=True,
            )  # fmt: skip
            ops.append(op)
        await self._await(batch, timeout)
        results.update((op.name, _put_outcome(op)) for op in ops)
        _release(ops)
        self._record_breakers(results, lambda r: r.ok)
        return results

    @staticmethod
    async def _await(batch: _Batch, timeout: float) -> None:
        if batch.remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.event.wait(), timeout)

    def _filter(self, names: list[str], out: dict, failure: Callable[[str, str], Any]) -> list[str]:
        refused = self.breakers.refused() if self.breakers is not None else frozenset()
        usable = []
        for name in names:
            if wire_name(name) is None:
                out[name] = failure(name, NOT_PVA)
            elif refused and ioc_name(name) in refused:
                out[name] = failure(name, CIRCUIT_OPEN.format(ioc=ioc_name(name)))
            else:
                usable.append(name)
        return usable

    def _record_breakers(self, results: dict[str, Any], ok: Callable[[Any], bool]) -> None:
        """One success or failure per IOC per call: success if any of its PVs worked."""
        if self.breakers is None:
            return
        by_ioc: dict[str, bool] = {}
        for name, result in results.items():
            if ok(result):
                by_ioc[ioc_name(name)] = True
                continue
            error = result.error if isinstance(result, WriteResult) else result.get("error")
            if error and (error.startswith("circuit breaker open") or error == NOT_PVA):
                continue
            by_ioc.setdefault(ioc_name(name), False)
        if by_ioc:
            self.breakers.record(by_ioc)


def _release(ops: list[_Op]) -> None:
    """Drop each operation here, on the loop's thread: the op, its handler and its builder
    form a cycle that the garbage collector would otherwise free on whichever thread runs it,
    and the binding refuses to destroy an operation on its own worker thread."""
    for op in ops:
        op.op = None


def _put_outcome(op: _Op) -> WriteResult:
    """A put's result: ``unknown`` once it was sent and no completion came (module doc, 4)."""
    name, result = op.name, op.result
    if not op.done:
        op.op.close()
        if op.sent:
            return WriteResult(name, False, SENT_TIMED_OUT, timed_out=True, unknown=True)
        return WriteResult(name, False, NO_ANSWER, timed_out=True)
    if result is None:
        return WriteResult(name, True)
    text = str(result) or type(result).__name__
    if isinstance(result, raw.Disconnected | raw.Cancelled) and op.sent:
        return WriteResult(name, False, text, unknown=True)
    return WriteResult(name, False, text if op.sent else f"cannot write value: {text}")


def _builder(op: _Op, target: Any) -> Callable[[Value], None]:
    """Fills the put's Value (the binding calls it once it knows the type, on its thread)."""

    def build(value: Value) -> None:
        kind = kind_of(value)
        if kind == "enum":
            choices = list(value["value.choices"])
            value["value.index"] = _enum_index(choices, target)
        elif kind == "scalar":
            value["value"] = target
        elif kind == "table" and isinstance(target, dict):
            for column, cells in (target.get("columns") or {}).items():
                value["value." + column] = cells
        else:
            raise TypeError(values.NOT_RESTORABLE)
        op.sent = True

    return build


def _enum_index(choices: list[str], item: Any) -> int:
    """A label must be one of the choices; an index any the IOC accepts (as CA's)."""
    if isinstance(item, str):
        if item in choices:
            return choices.index(item)
        if not item.strip().isdigit():
            raise ValueError(f"{item!r} is not one of {choices}")
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, int | float):
        raise TypeError(f"enum value must be a label or an index, not {item!r}")
    return int(item)

"""Squirrel's Channel Access client: the only module that speaks CA (DESIGN.md).

Built for 50K channels on caproto's sans-I/O core (its constants, DBR layouts, address-list
and environment rules, status codes) with our own asyncio I/O, because caproto's stock client
keeps a task, futures and state machines per PV and cannot connect 50K channels in time:

* one UDP socket searches for MANY names per datagram, with a per-name retry/backoff
  (as libca does), paced so a 50K burst does not overflow the servers' UDP buffers;
* one TCP connection per IOC (an ``asyncio.Protocol``); requests are packed straight into
  one write buffer per event-loop turn, and ``data_received`` parses the whole byte stream
  in one loop with ``struct`` (the hot EVENT_ADD path never builds a command object);
* ONE small ``_Channel`` record per channel (``__slots__``), no task or future per PV;
  updates go to one callback ``on_update(name, entry)`` with a ``monitor.values.Entry``.

Every channel gets one DBR_CTRL_* read when it connects (units, precision, control limits,
enum strings); values come as DBR_TIME_* (subscriptions and reads). An enum's value is its
label, with ``index`` set. Timestamps are UTC epoch seconds (EPICS epoch offset applied).

A dropped TCP connection (IOC killed or restarted, server disconnect) marks its channels
disconnected at once (``on_connection(name, False)``) and sends them back to searching
(backoff capped at SEARCH_MAX, so a restarted IOC is found within ~2 s); a silent one is
dropped by the ECHO watchdog after ``EPICS_CA_CONN_TMO``. Subscriptions are restored on
reconnect.

A put's result tells a put that was refused or never sent (``ok`` false: no channel, no write
access, a value the channel cannot take, an error status from the IOC) from one that was sent
and never answered (``unknown``: the connection dropped, or the time ran out, before the
completion came), which the IOC may well have applied.

Names may carry ``ca://`` (stripped on the wire only); ``pva://`` names are not served here:
their entries say so in ``error``. Honours ``EPICS_CA_ADDR_LIST``, ``EPICS_CA_AUTO_ADDR_LIST``,
``EPICS_CA_SERVER_PORT`` and ``EPICS_CA_MAX_ARRAY_BYTES`` (through caproto's readers).

Public API (used by the monitor and by the snapshot/restore workers; keep it stable):

    async with CAClient() as client:
        connected = await client.connect(names, timeout)          # set of connected names
        client.subscribe(names, on_update, on_connection)         # monitor
        client.clear(names)                                       # stop monitoring, drop
        entries = await client.read_many(names, timeout)          # {name: Entry}
        results = await client.write_many({name: value}, timeout, wait=True)  # {name: WriteResult}

Synchronous callers (workers, web views) go through ``monitor.bridge``, never this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import caproto
from caproto._status import eca_value_to_status

from monitor import values
from monitor.circuits import Breakers, ioc_name
from monitor.values import Entry

log = logging.getLogger(__name__)

EPICS_EPOCH = 631152000.0  # 1990-01-01 UTC in POSIX seconds
CA_MINOR_VERSION = 13
ECA_NORMAL = 1
DBE_VALUE_ALARM = 1 | 4
MAX_DATAGRAM = 1400  # fits one Ethernet frame
SEARCH_FIRST = 0.03  # first retry of an unanswered search (s); doubles up to SEARCH_MAX
SEARCH_MAX = 2.0  # cap of the retry interval: a restarted IOC is found within ~2 s
SEARCH_WINDOW = 1500  # names searched and not yet answered, at most
SEARCH_PACE = 0.001  # pause while the window is full (s)
ECHO_TIMEOUT = 5.0  # longest wait for the answer to an ECHO (s)
SEARCH_STALL = 0.05  # a window that does not move for this long is taken as lost
UNSUPPORTED_PVA = "pva:// addresses are not served by the Channel Access client"
CIRCUIT_OPEN = "circuit breaker open for IOC {ioc}"
NOT_CONNECTED = "not connected (no IOC answered the search)"
TIMED_OUT = "timed out"
SENT_CONNECTION_LOST = (
    "sent, but the connection to the IOC was lost before it answered: it may have been applied"
)
SENT_TIMED_OUT = "sent, but the IOC did not answer in time: it may have been applied"

# Command ids (CA protocol).
_VERSION, _EVENT_ADD, _EVENT_CANCEL, _WRITE, _SEARCH, _NOT_FOUND = 0, 1, 2, 4, 6, 14
_ERROR, _CLEAR_CHANNEL, _READ_NOTIFY, _CREATE_CHAN, _WRITE_NOTIFY = 11, 12, 15, 18, 19
_CLIENT_NAME, _HOST_NAME, _ACCESS_RIGHTS, _ECHO, _CREATE_CH_FAIL, _SERVER_DISCONN = (
    20, 21, 22, 23, 26, 27,
)  # fmt: skip

_HEADER = struct.Struct(">HHHHII")
_EXT = struct.Struct(">II")
_TIME_HEAD = struct.Struct(">hhII")
_EVENT_PAYLOAD = struct.Struct(">fffHxx").pack(0.0, 0.0, 0.0, DBE_VALUE_ALARM)

# Native DBR types 0..6: STRING INT FLOAT ENUM CHAR LONG DOUBLE.
_STRING, _INT, _FLOAT, _ENUM, _CHAR, _LONG, _DOUBLE = range(7)
_FORMAT = {_INT: "h", _FLOAT: "f", _ENUM: "H", _CHAR: "B", _LONG: "i", _DOUBLE: "d"}
_SIZE = {_STRING: 40, _INT: 2, _FLOAT: 4, _ENUM: 2, _CHAR: 1, _LONG: 4, _DOUBLE: 8}
_SCALAR = {t: struct.Struct(">" + f) for t, f in _FORMAT.items()}
# Where the value starts in a DBR_TIME_<t> payload (caproto's DBR struct sizes).
_TIME_OFFSET = {t: ctypes.sizeof(caproto._dbr.DBR_TYPES[t + 14]) for t in range(7)}
_CTRL_SIZE = {t: ctypes.sizeof(caproto._dbr.DBR_TYPES[t + 28]) for t in range(7)}


def wire_name(name: str) -> str | None:
    """The name sent on the CA wire: ``ca://`` stripped; None for ``pva://`` (not CA)."""
    if name.startswith("pva://"):
        return None
    return name[5:] if name.startswith("ca://") else name


def _pad8(data: bytes) -> bytes:
    rem = len(data) % 8
    return data + b"\0" * (8 - rem) if rem else data


def _message(command: int, payload: bytes, dtype: int, count: int, p1: int, p2: int) -> bytes:
    """One CA message; the extended header when size or count do not fit 16 bits."""
    size = len(payload)
    if size >= 0xFFFF or count >= 0xFFFF:
        return _HEADER.pack(command, 0xFFFF, dtype, 0, p1, p2) + _EXT.pack(size, count) + payload
    return _HEADER.pack(command, size, dtype, count, p1, p2) + payload


def _status_text(code: int) -> str:
    status = eca_value_to_status.get(code)
    return status.description if status is not None else f"CA status {code}"


def _decode_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _decode_values(buf: memoryview, off: int, dtype: int, count: int) -> Any:
    """The value at ``buf[off:]``: a scalar for count 1, else a list."""
    if dtype == _STRING:
        if count == 1:
            return _decode_string(bytes(buf[off : off + 40]))
        return [_decode_string(bytes(buf[off + 40 * i : off + 40 * i + 40])) for i in range(count)]
    if count == 1:
        return _SCALAR[dtype].unpack_from(buf, off)[0]
    return list(struct.unpack_from(f">{count}{_FORMAT[dtype]}", buf, off))


def _meta_from_ctrl(dtype: int, payload: bytes) -> dict[str, Any]:
    """Display metadata from a DBR_CTRL_<dtype> payload (parsed by caproto's DBR structs)."""
    if dtype == _STRING:
        return {}
    dbr = caproto._dbr.DBR_TYPES[dtype + 28].from_buffer_copy(payload[: _CTRL_SIZE[dtype]])
    if dtype == _ENUM:
        strs = [_decode_string(bytes(s)) for s in dbr.strs[: dbr.no_str]]
        return {"enum_strs": strs}
    meta: dict[str, Any] = {"units": _decode_string(bytes(dbr.units)) or None}
    if dtype in (_FLOAT, _DOUBLE):
        meta["precision"] = int(dbr.precision)
    for key in ("upper_ctrl_limit", "lower_ctrl_limit"):
        limit = float(getattr(dbr, key))
        meta[key] = limit if math.isfinite(limit) else None
    return meta


@dataclass(slots=True)
class WriteResult:
    """The outcome of one put: ok, or an error text (``timed_out`` when no answer came in
    time; ``unknown`` when the put was sent but never answered: it may have been applied)."""

    name: str
    ok: bool
    error: str | None = None
    timed_out: bool = False
    unknown: bool = False


class _Channel:
    """One record per channel; everything the client knows about it."""

    __slots__ = (
        "name", "wire", "cid", "sid", "circuit", "dtype", "count", "access", "meta", "raw",
        "subscribed", "next_search", "interval", "connected", "queued",
    )  # fmt: skip

    def __init__(self, name: str, wire: str, cid: int) -> None:
        self.name = name
        self.wire = wire
        self.cid = cid
        self.sid: int | None = None
        self.circuit: _Circuit | None = None
        self.dtype = 0
        self.count = 1
        self.access = 0
        self.meta: dict[str, Any] | None = None  # None until the CTRL read answered
        self.raw: tuple | None = None  # last (status, severity, ts, value) before meta came
        self.subscribed = False
        self.next_search = 0.0
        self.interval = SEARCH_FIRST
        self.connected = False
        self.queued: list[Callable[[_Channel], None]] | None = None  # run once ready


class _Batch:
    """Outstanding reads or writes of one call: a counter and one event, no future per PV."""

    __slots__ = ("remaining", "results", "done", "expired")

    def __init__(self) -> None:
        self.expired = False
        self.remaining = 0
        self.results: dict[str, Any] = {}
        self.done = asyncio.Event()

    def finish(self, name: str, result: Any) -> None:
        if name in self.results:
            return
        self.results[name] = result
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class _SearchProtocol(asyncio.DatagramProtocol):
    def __init__(self, client: CAClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client._search_reply(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("search socket error: %s", exc)


class _Circuit(asyncio.Protocol):
    """One TCP connection to one IOC; parses its byte stream in bulk."""

    def __init__(self, client: CAClient, address: tuple[str, int]) -> None:
        self.client = client
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.channels: dict[int, _Channel] = {}  # cid -> channel
        self.out: list[bytes] = []
        self.buffer = bytearray()
        self.flush_scheduled = False
        self.closed = False
        self.last_rx = time.monotonic()  # when the IOC last sent anything
        self.echo_sent: float | None = None  # an ECHO awaiting its answer, since

    # --- output -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)
        if not self.flush_scheduled and self.transport is not None:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def create(self, ch: _Channel) -> None:
        self.channels[ch.cid] = ch
        ch.circuit = self
        name = _pad8(ch.wire.encode() + b"\0")
        self.send(_message(_CREATE_CHAN, name, 0, 0, ch.cid, CA_MINOR_VERSION))

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = _pad8(socket.gethostname().encode()[:255] + b"\0")
        user = _pad8(os.environ.get("USER", "squirrel").encode() + b"\0")
        head = (
            _message(_VERSION, b"", 0, CA_MINOR_VERSION, 0, 0)
            + _message(_HOST_NAME, host, 0, 0, 0, 0)
            + _message(_CLIENT_NAME, user, 0, 0, 0, 0)
        )
        self.out.insert(0, head)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.client._circuit_lost(self)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self.buffer
        buf += data
        view = memoryview(buf)
        end = len(buf)
        off = 0
        client = self.client
        now = time.time()
        unpack_header = _HEADER.unpack_from
        try:
            while end - off >= 16:
                command, size, dtype, count, p1, p2 = unpack_header(view, off)
                head = 16
                if size == 0xFFFF and count == 0:
                    if end - off < 24:
                        break
                    size, count = _EXT.unpack_from(view, off + 16)
                    head = 24
                if end - off < head + size:
                    break
                start = off + head
                off = start + size
                if command == _EVENT_ADD:
                    if size:
                        client._on_event(self, view, start, dtype, count, p1, p2, now)
                else:
                    client._on_command(self, command, view, start, size, dtype, count, p1, p2)
        finally:
            view.release()
        del buf[:off]


class CAClient:
    """A Channel Access client for many channels; see the module docstring."""

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
        env = caproto.get_environment_variables()
        self.max_array_bytes = int(env["EPICS_CA_MAX_ARRAY_BYTES"])
        self.search_addresses = [
            (socket.gethostbyname(host), port) for host, port in caproto.get_client_address_list()
        ]
        self.channels: dict[str, _Channel] = {}
        self.by_cid: dict[int, _Channel] = {}
        self.circuits: dict[tuple[str, int], _Circuit] = {}
        self.pending_circuits: dict[tuple[str, int], list[_Channel]] = {}
        self.searching: dict[int, _Channel] = {}  # cid -> channel awaiting a search answer
        self.ops: dict[int, tuple[_Batch, _Channel, int]] = {}  # ioid -> (batch, channel, kind)
        self.connect_waiters: list[tuple[set[str], asyncio.Event]] = []
        self.next_id = 1
        self.search_wakeup: asyncio.Event | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.tasks: list[asyncio.Task] = []
        self.search_replies = 0
        self.disconnects = 0  # connected channels that lost their connection
        self.failed_connects = 0  # TCP connections to an IOC that could not be opened
        self.closed = False

    # --- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> CAClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind(("0.0.0.0", 0))
        self.udp, _ = await loop.create_datagram_endpoint(lambda: _SearchProtocol(self), sock=sock)
        self.search_wakeup = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._search_loop(), name="ca-search"))
        self.tasks.append(asyncio.create_task(self._echo_loop(), name="ca-echo"))

    async def close(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        for circuit in list(self.circuits.values()):
            if circuit.transport is not None:
                circuit.flush()
                circuit.transport.close()
        self.circuits.clear()
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    # --- public API ---------------------------------------------------------------------------
    async def connect(self, names: Iterable[str], timeout: float) -> set[str]:
        """Create (and search for) channels; wait until all connected or ``timeout``."""
        chans = self._ensure(names)
        pending = {ch.name for ch in chans if not ch.connected}
        if pending:
            event = asyncio.Event()
            waiter = (pending, event)
            self.connect_waiters.append(waiter)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            finally:
                self.connect_waiters.remove(waiter)
        return {ch.name for ch in chans if ch.connected}

    def subscribe(
        self,
        names: Iterable[str],
        on_update: Callable[[str, Entry], None] | None = None,
        on_connection: Callable[[str, bool], None] | None = None,
    ) -> None:
        """Monitor ``names`` (DBR_TIME_*, value+alarm); updates go to ``on_update``.

        Returns at once; channels connect in the background and re-subscribe after an IOC
        restart. ``pva://`` names get one entry saying they are unsupported.
        """
        if on_update is not None:
            self.on_update = on_update
        if on_connection is not None:
            self.on_connection = on_connection
        names = list(names)
        for name in names:
            if wire_name(name) is None and self.on_update is not None:
                self.on_update(name, _error_entry(UNSUPPORTED_PVA))
        for ch in self._ensure(names):
            if not ch.subscribed:
                ch.subscribed = True
                if ch.connected:
                    self._send_subscribe(ch)

    def clear(self, names: Iterable[str]) -> None:
        """Stop monitoring ``names`` and drop their channels."""
        for name in names:
            ch = self.channels.pop(name, None)
            if ch is None:
                continue
            self.by_cid.pop(ch.cid, None)
            self.searching.pop(ch.cid, None)
            circuit = ch.circuit
            if circuit is not None and ch.connected and ch.sid is not None:
                if ch.subscribed:
                    cancel = _message(_EVENT_CANCEL, b"", ch.dtype + 14, ch.count, ch.sid, ch.cid)
                    circuit.send(cancel)
                circuit.send(_message(_CLEAR_CHANNEL, b"", 0, 0, ch.sid, ch.cid))
            if circuit is not None:
                circuit.channels.pop(ch.cid, None)

    def is_connected(self, name: str) -> bool:
        ch = self.channels.get(name)
        return ch is not None and ch.connected

    def connected_names(self) -> set[str]:
        """Every connected name at once (the monitor's stats, once a heartbeat, at 50K)."""
        return {name for name, ch in self.channels.items() if ch.connected}

    async def read_many(
        self, names: Iterable[str], timeout: float, *, concurrency: int | None = None
    ) -> dict[str, Entry]:
        """Read each name once (DBR_TIME_* + metadata); never raises for one PV.

        Failed reads give ``{"connected": False, "error": ...}``. At most ``concurrency``
        reads are outstanding at once; each window of reads gets ``timeout``.
        """
        from django.conf import settings

        names = list(dict.fromkeys(names))
        window = concurrency or settings.EPICS_CONCURRENCY
        out: dict[str, Entry] = {}
        for start in range(0, len(names), window):
            out.update(await self._read_window(names[start : start + window], timeout))
        return out

    async def write_many(
        self, values_by_name: dict[str, Any], timeout: float, wait: bool = True
    ) -> dict[str, WriteResult]:
        """Put each value (with completion when ``wait``); enums by label or index, arrays
        as lists. Never raises for one PV: each result says ok, error or timed out."""
        results: dict[str, WriteResult] = {}
        usable = self._filter(list(values_by_name), results, _failure)
        deadline = time.monotonic() + timeout
        batch = _Batch()
        sent: set[str] = set()  # puts with completion on the wire, answered or not

        def put(ch: _Channel) -> None:
            circuit, sid = ch.circuit, ch.sid
            if batch.expired or circuit is None or sid is None:
                return
            if not ch.access & 2:
                batch.finish(ch.name, WriteResult(ch.name, False, "no write access"))
                return
            try:
                payload, count = self._encode(ch, values_by_name[ch.name])
            except (ValueError, TypeError, struct.error) as exc:
                batch.finish(ch.name, WriteResult(ch.name, False, f"cannot write value: {exc}"))
                return
            if wait:
                ioid = self._ioid()
                self.ops[ioid] = (batch, ch, _WRITE_NOTIFY)
                circuit.send(_message(_WRITE_NOTIFY, payload, ch.dtype, count, sid, ioid))
                sent.add(ch.name)
            else:
                circuit.send(_message(_WRITE, payload, ch.dtype, count, sid, 0))
                batch.finish(ch.name, WriteResult(ch.name, True))

        chans = self._ensure(usable)
        batch.remaining = len(chans)  # all counted before any can finish
        for ch in chans:
            self._when_ready(ch, put)
        await self._await_batch(batch, deadline)
        for name in usable:
            result = batch.results.get(name)
            if result is None and name in sent:
                result = WriteResult(name, False, SENT_TIMED_OUT, timed_out=True, unknown=True)
            elif result is None:
                error = TIMED_OUT if self.is_connected(name) else NOT_CONNECTED
                result = WriteResult(name, False, error, timed_out=True)
            results[name] = result
        self._record_breakers(results, lambda r: r.ok)
        return results

    # --- internals: channels and search -------------------------------------------------------
    def _ioid(self) -> int:
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF or 1
        return self.next_id

    def _ensure(self, names: Iterable[str]) -> list[_Channel]:
        out = []
        now = time.monotonic()
        for name in names:
            ch = self.channels.get(name)
            if ch is None:
                wire = wire_name(name)
                if wire is None:
                    continue
                ch = _Channel(name, wire, self._ioid())
                ch.next_search = now
                self.channels[name] = ch
                self.by_cid[ch.cid] = ch
                self.searching[ch.cid] = ch
            out.append(ch)
        if self.search_wakeup is not None:
            self.search_wakeup.set()
        return out

    def _filter(self, names: list[str], out: dict, failure: Callable[[str, str], Any]) -> list[str]:
        """Names that may be tried now; the others get ``failure(name, error)`` in ``out``."""
        refused = self.breakers.refused() if self.breakers is not None else frozenset()
        usable = []
        for name in names:
            if wire_name(name) is None:
                out[name] = failure(name, UNSUPPORTED_PVA)
            elif refused and ioc_name(name) in refused:
                out[name] = failure(name, CIRCUIT_OPEN.format(ioc=ioc_name(name)))
            else:
                usable.append(name)
        return usable

    async def _search_loop(self) -> None:
        """Send due searches, many names per datagram, paced; back off per name."""
        assert self.search_wakeup is not None
        while not self.closed:
            now = time.monotonic()
            due = [ch for ch in self.searching.values() if ch.next_search <= now]
            if due:
                await self._send_searches(due, now)
            pending = [ch.next_search for ch in self.searching.values()]
            delay = max(0.005, min(pending) - time.monotonic()) if pending else 5.0
            self.search_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.search_wakeup.wait(), min(delay, 1.0))

    async def _echo_loop(self) -> None:
        """Notice IOCs that stopped answering but kept the TCP connection (hung, or a host
        gone without a reset): an ECHO after EPICS_CA_CONN_TMO of silence; no answer within
        the same time (at most ECHO_TIMEOUT) drops the circuit, whose channels then go back
        to searching as after any disconnect."""
        tmo = float(caproto.get_environment_variables()["EPICS_CA_CONN_TMO"])
        wait = min(tmo, ECHO_TIMEOUT)
        while not self.closed:
            await asyncio.sleep(min(1.0, tmo / 4))
            now = time.monotonic()
            for circuit in list(self.circuits.values()):
                if circuit.transport is None:
                    continue
                if circuit.echo_sent is not None:
                    if circuit.last_rx >= circuit.echo_sent:
                        circuit.echo_sent = None
                    elif now - circuit.echo_sent > wait:
                        log.warning("IOC at %s:%s does not answer: dropped", *circuit.address)
                        circuit.transport.abort()
                elif now - circuit.last_rx > tmo:
                    circuit.echo_sent = now
                    circuit.send(_message(_ECHO, b"", 0, 0, 0, 0))

    async def _send_searches(self, due: list[_Channel], now: float) -> None:
        """Many names per datagram; at most SEARCH_WINDOW names unanswered at a time, so a
        50K burst never overflows the servers' UDP buffers (lost searches cost a backoff)."""
        assert self.udp is not None
        head = _message(_VERSION, b"", 0, CA_MINOR_VERSION, 0, 0)
        datagrams: list[tuple[bytes, list[_Channel]]] = []
        chans: list[_Channel]
        parts, chans, size = [head], [], len(head)
        for ch in due:
            msg = _message(
                _SEARCH, _pad8(ch.wire.encode() + b"\0"), 5, CA_MINOR_VERSION, ch.cid, ch.cid
            )
            if size + len(msg) > MAX_DATAGRAM:
                datagrams.append((b"".join(parts), chans))
                parts, chans, size = [head], [], len(head)
            parts.append(msg)
            chans.append(ch)
            size += len(msg)
        if chans:
            datagrams.append((b"".join(parts), chans))
        sent = 0
        base = self.search_replies
        for datagram, chans in datagrams:
            waited = 0.0
            while sent - (self.search_replies - base) > SEARCH_WINDOW:
                if waited >= SEARCH_STALL:  # the rest are lost or unknown names: go on
                    base = self.search_replies - sent
                    break
                await asyncio.sleep(SEARCH_PACE)
                waited += SEARCH_PACE
            for address in self.search_addresses:
                try:
                    self.udp.sendto(datagram, address)
                except OSError as exc:
                    log.debug("search send to %s failed: %s", address, exc)
            sent += len(chans)
            at = time.monotonic()
            for ch in chans:
                ch.next_search = at + ch.interval
                ch.interval = min(ch.interval * 2, SEARCH_MAX)

    def _search_reply(self, data: bytes, addr: tuple[str, int]) -> None:
        off = 0
        end = len(data)
        while end - off >= 16:
            command, size, dtype, count, p1, p2 = _HEADER.unpack_from(data, off)
            off += 16 + size
            if command != _SEARCH:
                continue
            ch = self.searching.pop(p2, None)
            if ch is None:
                continue
            self.search_replies += 1
            host = addr[0] if p1 == 0xFFFFFFFF else socket.inet_ntoa(struct.pack(">I", p1))
            self._attach(ch, (host, dtype))

    def _attach(self, ch: _Channel, address: tuple[str, int]) -> None:
        circuit = self.circuits.get(address)
        if circuit is not None and not circuit.closed:
            circuit.create(ch)
            return
        waiting = self.pending_circuits.get(address)
        if waiting is not None:
            waiting.append(ch)
            return
        self.pending_circuits[address] = [ch]
        self.tasks.append(asyncio.create_task(self._open_circuit(address)))

    async def _open_circuit(self, address: tuple[str, int]) -> None:
        from django.conf import settings

        loop = asyncio.get_running_loop()
        circuit = _Circuit(self, address)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: circuit, *address),
                settings.EPICS_CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to IOC at %s:%s: %s", *address, exc)
            self.failed_connects += 1
            for ch in self.pending_circuits.pop(address, []):
                self._research(ch)
            return
        finally:
            task = asyncio.current_task()
            if task in self.tasks:
                self.tasks.remove(task)
        self.circuits[address] = circuit
        for ch in self.pending_circuits.pop(address, []):
            if self.channels.get(ch.name) is ch:
                circuit.create(ch)

    def _research(self, ch: _Channel, delay: float = 0.0) -> None:
        if self.channels.get(ch.name) is not ch:
            return
        ch.circuit = None
        ch.sid = None
        ch.interval = SEARCH_FIRST * 4
        ch.next_search = time.monotonic() + delay
        self.searching[ch.cid] = ch
        if self.search_wakeup is not None:
            self.search_wakeup.set()

    def _circuit_lost(self, circuit: _Circuit) -> None:
        if self.circuits.get(circuit.address) is circuit:
            del self.circuits[circuit.address]
        if self.closed:
            return
        log.warning(
            "lost connection to IOC at %s:%s (%d channels)", *circuit.address, len(circuit.channels)
        )
        for ioid, (batch, ch, kind) in list(self.ops.items()):
            if ch.circuit is circuit:
                del self.ops[ioid]
                if kind == _WRITE_NOTIFY:  # sent, never answered: it may have been applied
                    batch.finish(ch.name, WriteResult(ch.name, False, SENT_CONNECTION_LOST,
                                                      unknown=True))  # fmt: skip
                else:
                    self._fail_op(batch, ch, kind, values.DISCONNECTED)
        for ch in circuit.channels.values():
            self._disconnected(ch)
            self._research(ch, delay=0.5)
        circuit.channels.clear()

    def _disconnected(self, ch: _Channel) -> None:
        was = ch.connected
        ch.connected = False
        ch.meta = None
        ch.raw = None
        if was:
            self.disconnects += 1
            if self.on_connection is not None:
                self.on_connection(ch.name, False)

    # --- internals: incoming commands ---------------------------------------------------------
    def _on_event(
        self,
        circuit: _Circuit,
        view: memoryview,
        start: int,
        dtype: int,
        count: int,
        status: int,
        subid: int,
        now: float,
    ) -> None:
        ch = self.by_cid.get(subid)
        if ch is None or status != ECA_NORMAL or ch.circuit is not circuit:
            return
        native = dtype - 14
        if not 0 <= native <= 6:
            return
        st, sev, secs, nsec = _TIME_HEAD.unpack_from(view, start)
        value = _decode_values(view, start + _TIME_OFFSET[native], native, count)
        raw = (st, sev, secs + nsec * 1e-9 + EPICS_EPOCH, value)
        if ch.meta is None:
            ch.raw = raw  # emitted when the metadata arrives, so every entry carries it
            return
        if self.on_update is not None:
            self.on_update(ch.name, self._entry(ch, raw, now))

    def _entry(self, ch: _Channel, raw: tuple, now: float) -> Entry:
        st, sev, stamp, value = raw
        meta = ch.meta or {}
        entry: Entry = {
            "value": value,
            "connected": True,
            "updated_at": now,
            "status": st,
            "severity": sev,
            "timestamp": stamp,
        }
        if meta:
            entry.update(meta)  # type: ignore[typeddict-item]
        if ch.dtype == _ENUM:
            strs = meta.get("enum_strs") or []
            if isinstance(value, int):
                entry["index"] = value
                entry["value"] = strs[value] if 0 <= value < len(strs) else str(value)
        elif isinstance(value, float) and not math.isfinite(value) or isinstance(value, list):
            entry = values.clean(entry)
        return entry

    def _on_command(
        self,
        circuit: _Circuit,
        command: int,
        view: memoryview,
        start: int,
        size: int,
        dtype: int,
        count: int,
        p1: int,
        p2: int,
    ) -> None:
        ch: _Channel | None  # from an op (always set) or looked up by cid (may be unknown)
        if command == _READ_NOTIFY:
            op = self.ops.pop(p2, None)
            if op is None:
                return
            batch, ch, kind = op
            if p1 != ECA_NORMAL:
                self._fail_op(batch, ch, kind, _status_text(p1))
            elif kind == _CREATE_CHAN:  # the metadata read
                try:
                    ch.meta = _meta_from_ctrl(dtype - 28, bytes(view[start : start + size]))
                except (ValueError, KeyError, IndexError) as exc:
                    log.debug("bad CTRL reply for %s: %s", ch.name, exc)
                    ch.meta = {}
                self._meta_done(ch)
            else:
                st, sev, secs, nsec = _TIME_HEAD.unpack_from(view, start)
                native = dtype - 14
                value = _decode_values(view, start + _TIME_OFFSET[native], native, count)
                raw = (st, sev, secs + nsec * 1e-9 + EPICS_EPOCH, value)
                batch.finish(ch.name, raw)
        elif command == _WRITE_NOTIFY:
            op = self.ops.pop(p2, None)
            if op is not None:
                batch, ch, _ = op
                ok = p1 == ECA_NORMAL
                batch.finish(ch.name, WriteResult(ch.name, ok, None if ok else _status_text(p1)))
        elif command == _ACCESS_RIGHTS:
            ch = self.by_cid.get(p1)
            if ch is not None:
                ch.access = p2
        elif command == _CREATE_CHAN:
            ch = self.by_cid.get(p1)
            if ch is None or ch.circuit is not circuit:
                circuit.send(_message(_CLEAR_CHANNEL, b"", 0, 0, p2, p1))
                return
            self._connected(ch, dtype, count, p2)
        elif command in (_CREATE_CH_FAIL, _SERVER_DISCONN):
            ch = self.by_cid.get(p1)
            if ch is not None and ch.circuit is circuit:
                circuit.channels.pop(ch.cid, None)
                self._disconnected(ch)
                self._research(ch, delay=1.0)
        elif command == _ERROR:
            self._on_error(view, start, size, p2)
        elif command == _ECHO:
            pass

    def _on_error(self, view: memoryview, start: int, size: int, code: int) -> None:
        if size < 16:
            return
        orig_command, _, _, _, o1, o2 = _HEADER.unpack_from(view, start)
        text = bytes(view[start + 16 : start + size]).split(b"\0", 1)[0].decode("utf-8", "replace")
        message = text or _status_text(code)
        if orig_command in (_READ_NOTIFY, _WRITE_NOTIFY):
            op = self.ops.pop(o2, None)
            if op is not None:
                self._fail_op(op[0], op[1], op[2], message)
        else:
            log.debug("CA error for command %d (%d/%d): %s", orig_command, o1, o2, message)

    def _fail_op(self, batch: _Batch, ch: _Channel, kind: int, message: str) -> None:
        if kind == _CREATE_CHAN:  # metadata read failed: go on without metadata
            ch.meta = {}
            self._meta_done(ch)
        elif kind == _WRITE_NOTIFY:
            batch.finish(ch.name, WriteResult(ch.name, False, message))
        else:
            batch.finish(ch.name, message)

    def _connected(self, ch: _Channel, dtype: int, count: int, sid: int) -> None:
        ch.sid = sid
        ch.dtype = dtype
        ch.count = max(1, min(count, self.max_array_bytes // _SIZE.get(dtype, 8)))
        ch.connected = True
        ch.interval = SEARCH_FIRST
        circuit = ch.circuit
        assert circuit is not None
        ioid = self._ioid()
        self.ops[ioid] = (_META_BATCH, ch, _CREATE_CHAN)
        circuit.send(_message(_READ_NOTIFY, b"", dtype + 28, 1, sid, ioid))
        if ch.subscribed:
            self._send_subscribe(ch)
        if self.on_connection is not None:
            self.on_connection(ch.name, True)
        for pending, event in self.connect_waiters:
            if ch.name in pending:
                pending.discard(ch.name)
                if not pending:
                    event.set()

    def _send_subscribe(self, ch: _Channel) -> None:
        assert ch.circuit is not None and ch.sid is not None
        ch.circuit.send(
            _message(_EVENT_ADD, _EVENT_PAYLOAD, ch.dtype + 14, _want(ch), ch.sid, ch.cid)
        )

    # --- internals: reads and writes ----------------------------------------------------------
    async def _read_window(self, names: list[str], timeout: float) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        usable = self._filter(names, out, lambda _n, err: _error_entry(err))
        deadline = time.monotonic() + timeout
        batch = _Batch()

        def get(ch: _Channel) -> None:
            circuit, sid = ch.circuit, ch.sid
            if batch.expired or circuit is None or sid is None:
                return
            ioid = self._ioid()
            self.ops[ioid] = (batch, ch, _READ_NOTIFY)
            circuit.send(_message(_READ_NOTIFY, b"", ch.dtype + 14, _want(ch), sid, ioid))

        chans = self._ensure(usable)
        batch.remaining = len(chans)  # all counted before any can finish
        for ch in chans:
            self._when_ready(ch, get)
        await self._await_batch(batch, deadline)
        now = time.time()
        for name in usable:
            result = batch.results.get(name)
            if isinstance(result, tuple):
                out[name] = self._entry(self.channels[name], result, now)
            elif result is not None:
                out[name] = _error_entry(result)
            else:
                out[name] = _error_entry(TIMED_OUT if self.is_connected(name) else NOT_CONNECTED)
        self._record_breakers(out, lambda e: e.get("connected", False))
        return out

    def _when_ready(self, ch: _Channel, action: Callable[[_Channel], None]) -> None:
        """Run ``action(ch)`` now if the channel is connected with its metadata, else then."""
        if ch.connected and ch.meta is not None:
            action(ch)
        elif ch.queued is None:
            ch.queued = [action]
        else:
            ch.queued.append(action)

    def _meta_done(self, ch: _Channel) -> None:
        if ch.raw is not None and self.on_update is not None:
            self.on_update(ch.name, self._entry(ch, ch.raw, time.time()))
        ch.raw = None
        queued, ch.queued = ch.queued, None
        for action in queued or ():
            action(ch)

    async def _await_batch(self, batch: _Batch, deadline: float) -> None:
        if batch.remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch.done.wait(), max(0.0, deadline - time.monotonic()))
        batch.expired = True
        if batch.remaining > 0:
            for ioid in [i for i, op in self.ops.items() if op[0] is batch]:
                del self.ops[ioid]

    def _record_breakers(self, results: dict[str, Any], ok: Callable[[Any], bool]) -> None:
        """One success or failure per IOC per call: success if any of its PVs worked."""
        if self.breakers is None:
            return
        by_ioc: dict[str, bool] = {}
        for name, result in results.items():
            if name.startswith("pva://"):  # not ours (``wire_name``)
                continue
            if ok(result):
                by_ioc[ioc_name(name)] = True
                continue
            error = result.error if isinstance(result, WriteResult) else result.get("error")
            if error and error.startswith("circuit breaker open"):
                continue  # refused here, not a call to the IOC
            by_ioc.setdefault(ioc_name(name), False)
        if by_ioc:
            self.breakers.record(by_ioc)

    def _encode(self, ch: _Channel, value: Any) -> tuple[bytes, int]:
        """(payload in the channel's native type, element count)."""
        items = list(value) if isinstance(value, list | tuple) else [value]
        if ch.dtype == _CHAR and isinstance(value, str):
            items = list(value.encode()) + [0]
        if ch.dtype == _STRING:
            raw = []
            for item in items:
                data = str(item).encode()
                if len(data) > 39:
                    raise ValueError("CA strings are limited to 39 bytes")
                raw.append(data.ljust(40, b"\0"))
            return _pad8(b"".join(raw)), len(items)
        if ch.dtype == _ENUM:
            items = [self._enum_index(ch, item) for item in items]
        elif ch.dtype in (_FLOAT, _DOUBLE):
            items = [float(item) for item in items]
        else:
            items = [int(item) for item in items]
        return _pad8(struct.pack(f">{len(items)}{_FORMAT[ch.dtype]}", *items)), len(items)

    @staticmethod
    def _enum_index(ch: _Channel, item: Any) -> int:
        """A label must be one of the channel's; an index may be any the IOC accepts, also one
        without a label (an mbbo holds 0..15 whatever states are named): a state read from
        the IOC, as a safety snapshot reads it, must be writable back. The IOC decides, and
        the restore's read-back reports what it kept."""
        strs = (ch.meta or {}).get("enum_strs") or []
        if isinstance(item, str):
            if item in strs:
                return strs.index(item)
            if item.strip().isdigit():
                item = int(item)
            else:
                raise ValueError(f"{item!r} is not one of {strs}")
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise TypeError(f"enum value must be a label or an index, not {item!r}")
        index = int(item)
        if not 0 <= index <= 0xFFFF:
            raise ValueError(f"enum index {index} out of range 0..65535")
        return index


_META_BATCH = _Batch()  # stands in for the batch of metadata reads, which nobody awaits


def _want(ch: _Channel) -> int:
    """Element count to ask for: 0 for arrays, so the IOC sends its current length (CA 4.13)."""
    return 0 if ch.count > 1 else 1


def _failure(name: str, error: str) -> WriteResult:
    return WriteResult(name, False, error)


def _error_entry(error: str) -> Entry:
    return {"value": None, "connected": False, "updated_at": time.time(), "error": error}

"""The one synchronous EPICS bridge: direct reads and writes of many addresses for workers and
web views (snapshot capture, restore, the EPICS test route).

1. **One client per protocol, on one event loop in a thread of its own.** The caller's thread
   keeps its database work (progress, COPY) between calls, while connections made by one call
   serve the next (a restore connects its 90K channels once: ``preconnect``, then write, then
   read back).
2. **The protocol of an address is decided in one function**, ``protocol_of``: ``pva://`` is
   pvAccess (``monitor.pva.PVAClient``), ``ca://`` or no prefix is Channel Access
   (``monitor.ca.CAClient``). Each protocol's client is made by a factory in ``CLIENTS``; a
   protocol without one answers every address with an error entry, never an exception.
   With ``settings.EPICS_UNPREFIXED_PVA_FALLBACK`` a bare name that no CA server answers is
   tried over pvAccess (``fallback_name``), for reads and writes alike; its result is
   reported under the bare name.
3. **Circuit breakers by one rule**: every client the bridge makes consults and records the
   process-wide breakers (``CircuitBreakers.shared``): an IOC whose calls keep failing is
   refused at once (``circuit breaker open for IOC ...``) instead of costing every later call
   its timeout, for capture, restore and diagnostics alike. Only the diagnostic ``probe`` of
   one name does not count its failure (``circuits.SuccessesOnly``).
4. **The monitor's client** (``MonitorClient``) is one object over both protocols' clients with
   ``CAClient``'s monitoring interface: addresses go to the client of their protocol (the
   pvAccess one made only when a ``pva://`` address or the fallback needs it); with the
   fallback on, a bare name that CA has not connected ``FALLBACK_AFTER`` seconds after it was
   subscribed is subscribed over pvAccess too and its updates reported under the bare name.
5. Reads go in windows of at most ``WINDOW`` addresses (and never more than
   ``settings.EPICS_CONCURRENCY`` in flight); ``on_chunk(done, total)`` runs on the CALLER's
   thread after each window, so progress written to the database uses the caller's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from monitor import ca, pva
from monitor.ca import CAClient
from monitor.circuits import Breakers, CircuitBreakers, SuccessesOnly
from monitor.pva import PVAClient
from monitor.values import Entry

FALLBACK_AFTER = 2.0  # s a bare name may search over CA before pvAccess is tried as well
WINDOW = 5000  # addresses per read window: measured as fast as one read_many of everything

CA, PVA = "ca", "pva"


def protocol_of(address: str) -> str:
    """The protocol that serves ``address`` (module docstring, 2)."""
    return PVA if address.startswith("pva://") else CA


def fallback_name(address: str) -> str | None:
    """The pvAccess address to try when CA finds no server for ``address``: only bare names,
    and only with ``settings.EPICS_UNPREFIXED_PVA_FALLBACK`` (module docstring, 2)."""
    if not settings.EPICS_UNPREFIXED_PVA_FALLBACK or "://" in address:
        return None
    return "pva://" + address


def _never_found(error: str | None) -> bool:
    """A CA failure that says no server has the name (what the PVA fallback retries)."""
    return error in (ca.NOT_CONNECTED, ca.TIMED_OUT)


def _never_found_pva(error: str | None) -> bool:
    return error == pva.NO_ANSWER


class EpicsClient(Protocol):
    """What the bridge needs of a protocol's asyncio client (``monitor.ca.CAClient``)."""

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def connect(self, names: Sequence[str], timeout: float) -> set[str]: ...
    async def read_many(
        self, names: Sequence[str], timeout: float, *, concurrency: int | None = None
    ) -> dict[str, Entry]: ...
    async def write_many(
        self, values_by_name: dict[str, Any], timeout: float, wait: bool = True
    ) -> dict[str, Any]: ...


def _ca_client(breakers: Breakers) -> EpicsClient:
    return CAClient(breakers=breakers)


def _pva_client(breakers: Breakers) -> EpicsClient:
    return PVAClient(breakers=breakers)


#: protocol -> factory of its client (module docstring, 2).
CLIENTS: dict[str, Callable[[Breakers], EpicsClient]] = {CA: _ca_client, PVA: _pva_client}
UNSUPPORTED: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of one put: ok, or an error text (``timed_out`` when no answer came in
    time). ``unknown``: the put was sent and never answered (the connection to the IOC dropped
    or the time ran out first), so the IOC may have applied it; otherwise a failed put was
    refused or never sent."""

    ok: bool
    timed_out: bool = False
    error: str | None = None
    unknown: bool = False


def _put_result(raw: Any) -> PutResult:
    """A client's write result as a PutResult."""
    ok = bool(getattr(raw, "ok", False))
    error = getattr(raw, "error", None)
    timed_out = bool(getattr(raw, "timed_out", False)) or (
        not ok and error is not None and "time" in str(error).lower()
    )
    return PutResult(
        ok=ok,
        timed_out=timed_out,
        error=None if ok else str(error or "failed"),
        unknown=not ok and bool(getattr(raw, "unknown", False)),
    )


def _error_entry(error: str) -> Entry:
    return {"value": None, "connected": False, "updated_at": time.time(), "error": error}


def _by_protocol(names: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        out.setdefault(protocol_of(name), []).append(name)
    return out


class Bridge:
    """Synchronous reads and writes over every protocol (module docstring); a context manager.
    Clients are opened on first use and closed by ``close``."""

    def __init__(self, *, breakers: Breakers | None = None) -> None:
        self._breakers: Breakers = breakers if breakers is not None else CircuitBreakers.shared()
        self._clients: dict[str, EpicsClient] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="epics-bridge", daemon=True
        )
        self._thread.start()

    # --- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            for client in self._clients.values():
                self._call(client.__aexit__(None, None, None))
        finally:
            self._clients.clear()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _client(self, protocol: str) -> EpicsClient | None:
        client = self._clients.get(protocol)
        if client is None and protocol in CLIENTS:
            client = CLIENTS[protocol](self._breakers)
            self._call(client.__aenter__())  # raises OSError if it cannot open its sockets
            self._clients[protocol] = client
        return client

    # --- calls -------------------------------------------------------------------------------
    def preconnect(self, names: Sequence[str], timeout: float) -> None:
        """Start searching and connecting ``names`` in the background (no wait): the
        connections are made while the caller works on the database."""
        for protocol, group in _by_protocol(names).items():
            client = self._client(protocol)
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.connect(group, timeout), self._loop)

    def read(
        self,
        names: Sequence[str],
        timeout: float,
        *,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> dict[str, Entry]:
        """Read each name once; a failed read gives an entry with ``connected=False`` and an
        error, never an exception for one PV."""
        out: dict[str, Entry] = {}
        total = len(dict.fromkeys(names))
        for protocol, group in _by_protocol(names).items():
            client = self._client(protocol)
            if client is None:
                error = _error_entry(UNSUPPORTED.get(protocol, f"{protocol}: no client"))
                out.update(dict.fromkeys(group, error))
                if on_chunk is not None:
                    on_chunk(len(out), total)
                continue
            for chunk in self._windows(client, group, timeout):
                out.update(chunk)
                if on_chunk is not None:
                    on_chunk(len(out), total)
        retry = {
            alias: name
            for name, entry in out.items()
            if not entry.get("connected")
            and _never_found(entry.get("error"))
            and (alias := fallback_name(name)) is not None
        }
        if retry:
            client = self._client(PVA)
            assert client is not None
            for chunk in self._windows(client, list(retry), timeout):
                for alias, entry in chunk.items():
                    if entry.get("connected"):
                        out[retry[alias]] = entry
        return out

    def _windows(self, client: EpicsClient, names: list[str], timeout: float) -> Any:
        """Each window's entries as it completes (module docstring, 5), read on the loop
        thread and handed to this one."""
        size = max(1, min(WINDOW, settings.EPICS_CONCURRENCY))
        results: queue.Queue = queue.Queue()
        done = object()

        async def run() -> None:
            try:
                for start in range(0, len(names), size):
                    window = names[start : start + size]
                    results.put(await client.read_many(window, timeout, concurrency=size))
            except BaseException as exc:  # handed to the caller's thread
                results.put(exc)
            finally:
                results.put(done)

        asyncio.run_coroutine_threadsafe(run(), self._loop)
        while (item := results.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item

    def write(
        self, targets: dict[str, Any], timeout: float, *, wait: bool = True
    ) -> dict[str, PutResult]:
        """Put each value (with completion when ``wait``); one PutResult per name, never an
        exception for one PV."""
        out: dict[str, PutResult] = {}
        for protocol, group in _by_protocol(list(targets)).items():
            client = self._client(protocol)
            if client is None:
                error = UNSUPPORTED.get(protocol, f"{protocol}: no client")
                out.update(dict.fromkeys(group, PutResult(ok=False, error=error)))
                continue
            raw = self._call(client.write_many({n: targets[n] for n in group}, timeout, wait))
            out.update({name: _put_result(raw.get(name)) for name in group})
        retry = {
            alias: name
            for name, result in out.items()
            if not result.ok
            and not result.unknown
            and _never_found(result.error)
            and (alias := fallback_name(name)) is not None
        }
        if retry:
            client = self._client(PVA)
            assert client is not None
            raw = self._call(client.write_many({a: targets[n] for a, n in retry.items()},
                                               timeout, wait))  # fmt: skip
            for alias, name in retry.items():
                result = _put_result(raw.get(alias))
                if result.ok or result.unknown or not _never_found_pva(result.error):
                    out[name] = result
        return out


def read(
    names: Sequence[str], timeout: float, *, on_chunk: Callable[[int, int], None] | None = None
) -> dict[str, Entry]:
    """``Bridge.read`` on a bridge of its own, closed after."""
    with Bridge() as bridge:
        return bridge.read(names, timeout, on_chunk=on_chunk)


def probe(name: str, timeout: float) -> Entry:
    """A diagnostic read of one name the caller chose: refused by an open breaker, but its
    failure is not held against the IOC its prefix names (module docstring, 3)."""
    with Bridge(breakers=SuccessesOnly(CircuitBreakers.shared())) as bridge:
        return bridge.read([name], timeout).get(name) or _error_entry("no answer")


def write(targets: dict[str, Any], timeout: float, *, wait: bool = True) -> dict[str, PutResult]:
    """``Bridge.write`` on a bridge of its own, closed after."""
    with Bridge() as bridge:
        return bridge.write(targets, timeout, wait=wait)


class MonitorClient:
    """Both protocols' clients as one, for the monitor (module docstring, 4)."""

    def __init__(self) -> None:
        self.on_update: Callable[[str, Entry], None] | None = None
        self.on_connection: Callable[[str, bool], None] | None = None
        self.ca = CAClient(on_update=self._ca_update, on_connection=self._ca_connection)
        self.pva: PVAClient | None = None
        self.aliases: dict[str, str] = {}  # pva:// alias -> bare name served through it
        self.trying: dict[str, float] = {}  # bare name -> when subscribed, until CA connects
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> MonitorClient:
        await self.ca.start()
        if settings.EPICS_UNPREFIXED_PVA_FALLBACK:
            self.tasks.append(asyncio.create_task(self._fallback_loop(), name="pva-fallback"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.ca.close()
        if self.pva is not None:
            await self.pva.close()

    @property
    def disconnects(self) -> int:
        return self.ca.disconnects + (self.pva.disconnects if self.pva else 0)

    @property
    def failed_connects(self) -> int:
        return self.ca.failed_connects + (self.pva.failed_connects if self.pva else 0)

    def _pva_client(self) -> PVAClient:
        if self.pva is None:
            self.pva = PVAClient(on_update=self._pva_update, on_connection=self._pva_connection)
            self.pva.start_now()
        return self.pva

    def subscribe(
        self,
        names: Sequence[str],
        on_update: Callable[[str, Entry], None] | None = None,
        on_connection: Callable[[str, bool], None] | None = None,
    ) -> None:
        if on_update is not None:
            self.on_update = on_update
        if on_connection is not None:
            self.on_connection = on_connection
        groups = _by_protocol(names)
        if groups.get(CA):
            self.ca.subscribe(groups[CA])
            now = time.monotonic()
            for name in groups[CA]:
                if fallback_name(name) is not None:
                    self.trying[name] = now
        if groups.get(PVA):
            self._pva_client().subscribe(groups[PVA])

    def clear(self, names: Sequence[str]) -> None:
        groups = _by_protocol(names)
        self.ca.clear(groups.get(CA, []))
        gone = list(groups.get(PVA, []))
        for name in groups.get(CA, []):
            self.trying.pop(name, None)
            alias = fallback_name(name)
            if alias is not None and self.aliases.pop(alias, None) is not None:
                gone.append(alias)
        if gone and self.pva is not None:
            self.pva.clear(gone)

    def connected_names(self) -> set[str]:
        """Every connected name at once, a bare name served through its pva:// alias included:
        one set per heartbeat instead of one ``is_connected`` per name (a tenth of the
        monitor's CPU at 50K names)."""
        names = self.ca.connected_names()
        if self.pva is not None:
            up = self.pva.connected_names()
            names |= up
            names.update(bare for alias, bare in self.aliases.items() if alias in up)
        return names

    async def _fallback_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            limit = time.monotonic() - FALLBACK_AFTER
            late = [n for n, since in self.trying.items() if since <= limit]
            for name in late:
                del self.trying[name]
            late = [n for n in late if not self.ca.is_connected(n)]
            if late:
                aliases = {"pva://" + name: name for name in late}
                self.aliases.update(aliases)
                self._pva_client().subscribe(list(aliases))

    # --- callbacks ----------------------------------------------------------------------------
    def _ca_update(self, name: str, entry: Entry) -> None:
        if self.aliases and entry.get("connected"):
            alias = "pva://" + name
            if self.aliases.pop(alias, None) is not None and self.pva is not None:
                self.pva.clear([alias])  # CA serves it after all
        if self.on_update is not None:
            self.on_update(name, entry)

    def _ca_connection(self, name: str, connected: bool) -> None:
        if self.on_connection is not None:
            self.on_connection(name, connected)

    def _pva_update(self, name: str, entry: Entry) -> None:
        name = self.aliases.get(name, name)
        if self.on_update is not None:
            self.on_update(name, entry)

    def _pva_connection(self, name: str, connected: bool) -> None:
        name = self.aliases.get(name, name)
        if self.on_connection is not None:
            self.on_connection(name, connected)

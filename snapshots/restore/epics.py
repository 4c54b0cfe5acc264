"""Channel Access and the monitor's cache, from synchronous code: the one module of the
restore that reaches them (``ChannelAccess``, ``PutResult``, ``live_entries``,
``monitor_alive``). Moved as is; to be replaced by a shared EPICS bridge and a shared
cache/liveness module.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from monitor import events, values
from squirrel.exceptions import Unavailable


def monitor_alive() -> bool:
    """Whether the monitor's heartbeat is recent: then its cache follows every PV."""
    raw = events.sync_redis().get(events.heartbeat_key())
    try:
        return raw is not None and time.time() - float(raw) <= settings.MONITOR_ALIVE_SECONDS
    except ValueError:
        return False


def live_entries(
    addresses: Sequence[str], *, ca: ChannelAccess | None = None
) -> dict[str, values.Entry]:
    """Current entries of ``addresses``: the monitor's cache (one HMGET) for connected PVs while
    the monitor is alive, a direct Channel Access read (on ``ca``, or a client of its own) for
    the others."""
    from monitor.events import values_read

    addresses = list(dict.fromkeys(addresses))
    found: dict[str, values.Entry] = {}
    if addresses and monitor_alive():
        for address, entry in values_read(addresses).items():
            if entry.get("connected") and not entry.get("error"):
                found[address] = entry
    missing = [a for a in addresses if a not in found]
    if not missing:
        return found
    try:
        if ca is not None:
            found.update(ca.read(missing, settings.EPICS_TIMEOUT))
        else:
            with ChannelAccess() as own:
                found.update(own.read(missing, settings.EPICS_TIMEOUT))
    except OSError as exc:
        raise Unavailable(f"Cannot read live values over Channel Access: {exc}") from exc
    return found


@dataclass(frozen=True, slots=True)
class PutResult:
    ok: bool
    timed_out: bool = False
    error: str | None = None


def _put_result(raw: Any) -> PutResult:
    """monitor.ca's WriteResult as a PutResult."""
    if isinstance(raw, PutResult):
        return raw
    ok = bool(getattr(raw, "ok", False))
    error = getattr(raw, "error", None)
    timed_out = bool(getattr(raw, "timed_out", False)) or (
        not ok and error is not None and "time" in str(error).lower()
    )
    return PutResult(ok=ok, timed_out=timed_out, error=None if ok else str(error or "failed"))


class ChannelAccess:
    """One ``monitor.ca.CAClient`` on an event loop in its own thread, called synchronously,
    so that the restore's database work stays on the calling thread between CA calls."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="restore-ca", daemon=True
        )
        self._thread.start()
        self._manager: Any = None
        self._client: Any = None
        try:
            self._client = self._call(self._open())
        except BaseException:
            self._stop()
            raise

    async def _open(self) -> Any:
        from monitor.ca import CAClient

        self._manager = CAClient()
        return await self._manager.__aenter__()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def preconnect(self, names: Sequence[str], timeout: float) -> None:
        """Start searching and connecting ``names`` in the background (no wait): the
        connections are made while the caller works on the database."""
        if names:
            asyncio.run_coroutine_threadsafe(self._client.connect(list(names), timeout), self._loop)

    def read(self, names: Sequence[str], timeout: float) -> dict[str, values.Entry]:
        if not names:
            return {}
        return self._call(self._client.read_many(list(names), timeout))

    def write(self, targets: dict[str, Any], timeout: float) -> dict[str, PutResult]:
        if not targets:
            return {}
        raw = self._call(self._client.write_many(targets, timeout, wait=True))
        return {name: _put_result(raw.get(name)) for name in targets}

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        try:
            if self._manager is not None:
                self._call(self._manager.__aexit__(None, None, None))
        finally:
            self._stop()

    def __enter__(self) -> ChannelAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

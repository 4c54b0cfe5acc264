"""Circuit breakers per IOC for direct Channel Access reads and writes (contract §8.1).

closed -> open after ``settings.CIRCUIT_THRESHOLD`` consecutive failures -> half_open after
``settings.CIRCUIT_COOL_DOWN`` seconds (one trial call) -> closed on success, open again on
failure.
Each process keeps its breakers in memory and writes every change to the Redis hash
``events.circuits_key()`` (field = IOC name, value = msgpack dict). An operator may force a
breaker open or closed (``circuit_force``); running processes pick that up from Redis.

Breakers are keyed by the IOC a name's prefix suggests (``ioc_name``), which holds for the
catalog's names. A diagnostic read of an arbitrary name goes through ``SuccessesOnly``: its
failure is not evidence against that IOC.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from typing import Any, Protocol, TypedDict

import msgpack
import redis
from django.conf import settings

from monitor import events
from squirrel.exceptions import Invalid

log = logging.getLogger(__name__)

FORCED_REFRESH = 1.0  # how often a process re-reads forced states from Redis (s)
STATES = ("closed", "open", "half_open")


class CircuitState(TypedDict):
    name: str
    state: str
    failure_count: int
    success_count: int
    call_count: int
    last_failure: float | None
    opened_at: float | None
    forced: str | None


@lru_cache(maxsize=1 << 18)  # a pure function asked twice per PV per call; 50K-PV catalogs
def ioc_name(address: str) -> str:
    """The IOC an address belongs to: the first two ``:`` parts when there are 3 or more, the
    first part when there are 2, otherwise ``default`` (protocol prefix ignored)."""
    for prefix in ("ca://", "pva://"):
        if address.startswith(prefix):
            address = address[len(prefix) :]
            break
    parts = address.split(":")
    if len(parts) >= 3:
        return f"{parts[0]}:{parts[1]}"
    if len(parts) == 2:
        return parts[0]
    return "default"


class Breakers(Protocol):
    """What a client asks of breakers: which IOCs are refused now; how its calls went."""

    def refused(self) -> frozenset[str]: ...
    def record(self, calls: dict[str, bool]) -> None: ...


class SuccessesOnly:
    """Breakers as a diagnostic read (GET /v1/pvs/test-epics) sees them: an open breaker
    refuses it as any call, a success counts (it closes a half-open breaker), a failure is not
    recorded. The caller picks the name, and a name that no IOC serves says nothing about the
    IOC its prefix names: six reads of missing PVs opened a real IOC's breaker, and each new
    prefix added a breaker of its own that nothing ever removed."""

    def __init__(self, breakers: Breakers) -> None:
        self.breakers = breakers

    def refused(self) -> frozenset[str]:
        return self.breakers.refused()

    def record(self, calls: dict[str, bool]) -> None:
        succeeded = {ioc: True for ioc, ok in calls.items() if ok}
        if succeeded:
            self.breakers.record(succeeded)


def _new(name: str) -> CircuitState:
    return {
        "name": name,
        "state": "closed",
        "failure_count": 0,
        "success_count": 0,
        "call_count": 0,
        "last_failure": None,
        "opened_at": None,
        "forced": None,
    }


class CircuitBreakers:
    """The breakers of one process, keyed by IOC name."""

    _shared: CircuitBreakers | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, threshold: int | None = None, cool_down: float | None = None):
        self.threshold = settings.CIRCUIT_THRESHOLD if threshold is None else threshold
        self.cool_down = settings.CIRCUIT_COOL_DOWN if cool_down is None else cool_down
        self.states: dict[str, CircuitState] = {}
        self.forced: dict[str, str] = {}
        self.forced_read_at = 0.0

    @classmethod
    def shared(cls) -> CircuitBreakers:
        """The process-wide breakers (workers keep them across tasks)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _refresh_forced(self) -> None:
        now = time.monotonic()
        if now - self.forced_read_at < FORCED_REFRESH:
            return
        self.forced_read_at = now
        try:
            raw = events.sync_redis().hgetall(events.circuits_forced_key())
        except redis.RedisError as exc:
            log.warning("cannot read circuit states: %s", exc)
            return
        self.forced = {
            events.text(ioc): events.text(state)
            for ioc, state in raw.items()
            if events.text(state) in ("open", "closed")
        }

    def allow(self, ioc: str) -> bool:
        """May a call to ``ioc`` be made now? (An open breaker past its cool-down lets one
        trial call through as half_open.)"""
        self._refresh_forced()
        forced = self.forced.get(ioc)
        if forced is not None:
            return forced == "closed"
        state = self.states.get(ioc)
        if state is None or state["state"] == "closed":
            return True
        if state["state"] == "open" and time.time() - (state["opened_at"] or 0) >= self.cool_down:
            state["state"] = "half_open"
            self._save([state])
            return True
        return state["state"] == "half_open"

    def refused(self) -> frozenset[str]:
        """The IOCs ``allow`` refuses now, all at once: a call of 90K names asks this once
        instead of asking ``allow`` per name (empty, the usual case, costs nothing per name)."""
        self._refresh_forced()
        out = {ioc for ioc, forced in self.forced.items() if forced != "closed"}
        for ioc, state in self.states.items():
            if state["state"] != "closed" and ioc not in self.forced and not self.allow(ioc):
                out.add(ioc)
        return frozenset(out)

    def success(self, ioc: str) -> None:
        self.record({ioc: True})

    def failure(self, ioc: str) -> None:
        self.record({ioc: False})

    def record(self, calls: dict[str, bool]) -> None:
        """One call per IOC (True: it succeeded), written to Redis in at most two round trips
        however many IOCs there are: a 50K-PV read whose names make 25K "IOCs" (the
        first-two-parts rule) must not wait on 25K synchronous writes."""
        register: list[CircuitState] = []
        save: list[CircuitState] = []
        now = time.time()
        for ioc, ok in calls.items():
            state = self.states.get(ioc)
            if state is None:
                state = self.states[ioc] = _new(ioc)
            state["call_count"] += 1
            if ok:
                changed = state["state"] != "closed" or state["failure_count"] != 0
                state["success_count"] += 1
                state["failure_count"] = 0
                state["state"] = "closed"
                state["opened_at"] = None
                if changed:
                    save.append(state)
                elif state["call_count"] == 1:
                    register.append(state)
                continue
            state["failure_count"] += 1
            state["last_failure"] = now
            if state["state"] == "half_open" or (
                state["state"] == "closed" and state["failure_count"] >= self.threshold
            ):
                state["state"] = "open"
                state["opened_at"] = now
                log.warning("circuit breaker for IOC %s opened", ioc)
            save.append(state)
        if register:
            self._register(register)
        if save:
            self._save(save)

    def _register(self, states: list[CircuitState]) -> None:
        """List new IOCs on the health page without overwriting what another process recorded
        (its breaker may be open while this process's first call happened to succeed)."""
        try:
            pipe = events.sync_redis().pipeline(transaction=False)
            for state in states:
                pipe.hsetnx(events.circuits_key(), state["name"], _packed(state))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("cannot save the circuit states of %d IOCs: %s", len(states), exc)

    def _save(self, states: list[CircuitState]) -> None:
        """Write ``states``, keeping the forced state Redis has: it belongs to the operator."""
        try:
            client = events.sync_redis()
            key = events.circuits_key()
            current = client.hmget(key, [s["name"] for s in states])
            mapping = {}
            for state, data in zip(states, current, strict=True):
                forced = msgpack.unpackb(data, raw=False).get("forced") if data else None
                mapping[state["name"]] = _packed({**state, "forced": forced})
            client.hset(key, mapping=events.fields(mapping))
        except redis.RedisError as exc:
            log.warning("cannot save the circuit states of %d IOCs: %s", len(states), exc)


def _packed(state: CircuitState | dict[str, Any]) -> bytes:
    return msgpack.packb(dict(state), use_bin_type=True)


def circuits_read() -> list[dict[str, Any]]:
    """Every breaker any process recorded, sorted by IOC name (for the health endpoints)."""
    raw = events.sync_redis().hgetall(events.circuits_key())
    states = [msgpack.unpackb(data, raw=False) for data in raw.values()]
    for state in states:
        if state.get("forced") in ("open", "closed"):
            state["state"] = state["forced"]
    return sorted(states, key=lambda s: s["name"])


def circuit_force(*, name: str, state: str) -> None:
    """Force the breaker of IOC ``name`` open or closed in every process ("closed" also
    clears its failure count, so it stays closed until new failures)."""
    if state not in ("open", "closed"):
        raise Invalid(f"state must be 'open' or 'closed', not {state!r}")
    client = events.sync_redis()
    data = client.hget(events.circuits_key(), name)
    current: dict[str, Any] = msgpack.unpackb(data, raw=False) if data else dict(_new(name))
    current["forced"] = state
    current["state"] = state
    if state == "closed":
        current["failure_count"] = 0
        current["opened_at"] = None
    else:
        current["opened_at"] = time.time()
    pipe = client.pipeline(transaction=True)
    pipe.hset(events.circuits_key(), name, msgpack.packb(current, use_bin_type=True))
    pipe.hset(events.circuits_forced_key(), name, state)
    pipe.execute()

"""Reads over the Redis value cache for the live-value and health endpoints (contract §2.3, §10).

The monitor process (monitor.runner) writes the cache, the heartbeat, the watchdog statistics
and the leader lock; this module only reads them (and, for the watchdog check, stores freshly
computed counts). Every key name comes from monitor.events and every value goes through
monitor.values. Redis failures surface as ``RedisError`` (the caller decides: most health
routes answer 503) or, for the live values, as ``Unavailable``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import msgpack
import redis
from django.conf import settings

from monitor import events, values
from squirrel.exceptions import Unavailable

DEFAULT_STALE_SECONDS = 300
MONITOR_STALE_SECONDS = 30.0  # monitor/status: "stale" beyond this heartbeat age
MAX_ERRORS = 10
DEFAULT_TEST_PV = "KLYS:LI22:31:KVAC"
HIGH_DISCONNECT_PERCENT = 10.0
SOME_DISCONNECT_PERCENT = 1.0
_STAT_INTS = (
    "check_count",
    "monitored_pvs",
    "connected_pvs",
    "disconnected_count",
    "stale_count",
    "reconnect_attempts",
    "successful_reconnects",
    "failed_reconnects",
    "updates_total",
    "updates_dropped",
)


def iso(epoch: float | None) -> str | None:
    """An epoch as ISO 8601 with its UTC offset, or None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


def _float(raw: Any) -> float | None:
    try:
        number = float(_text(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(raw: Any) -> int:
    try:
        return int(float(_text(raw)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


# --- live values ---------------------------------------------------------------------------


def _wire(data: bytes) -> dict[str, Any] | None:
    try:
        return values.to_wire(values.unpack(data))
    except (ValueError, TypeError, msgpack.ExtraData, AttributeError):
        return None  # a corrupt entry is treated as not cached


def live_read(*, names: list[str]) -> dict[str, dict[str, Any]]:
    """CacheEntries of the ``names`` that are cached (one HMGET); uncached names left out."""
    if not names:
        return {}
    unique = list(dict.fromkeys(names))
    try:
        raw = events.sync_redis().hmget(events.values_hash(), unique)
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to get live values: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for name, data in zip(unique, raw, strict=True):
        if data is not None and (entry := _wire(data)) is not None:
            out[name] = entry
    return out


def live_read_all() -> dict[str, Any]:
    """Every cached CacheEntry: ``{"values": {addr: entry}, "count": n}``."""
    try:
        raw = events.sync_redis().hgetall(events.values_hash())
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to get live values: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for name, data in raw.items():
        if (entry := _wire(data)) is not None:
            out[name.decode()] = entry
    return {"values": out, "count": len(out)}


def cache_status() -> dict[str, Any]:
    """How many values are cached, and whether Redis answers."""
    try:
        count = events.sync_redis().hlen(events.values_hash())
    except redis.RedisError as exc:
        return {"cachedPvCount": 0, "status": "disconnected", "error": str(exc)}
    return {"cachedPvCount": count, "status": "connected", "error": None}


def epics_test(*, pv: str) -> dict[str, Any]:
    """A direct Channel Access read of one PV, with the EPICS environment (a diagnostic)."""
    environment = {
        name: os.environ.get(name, "NOT SET")
        for name in ("EPICS_CA_ADDR_LIST", "EPICS_CA_AUTO_ADDR_LIST")
    }
    try:
        from monitor import ca

        entry = ca.read_sync([pv], settings.EPICS_TIMEOUT).get(pv) or {}
        error = entry.get("error")
    except Exception as exc:  # a diagnostic reports every failure instead of raising
        entry, error = {}, f"{type(exc).__name__}: {exc}"
    return {
        "pv": pv,
        "connected": bool(entry.get("connected")),
        "value": values.to_wire(entry)["value"] if entry else None,
        "error": error,
        "environment": environment,
    }


# --- monitor state -------------------------------------------------------------------------


@dataclass
class MonitorState:
    """What the monitor last wrote, read in one pipelined round trip."""

    now: float
    heartbeat: float | None
    heartbeat_raw: str | None
    cached: int
    disconnected: int
    leader: str | None
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def age(self) -> float | None:
        if self.heartbeat is None:
            return None
        return round(max(0.0, self.now - self.heartbeat), 3)

    @property
    def alive(self) -> bool:
        age = self.age
        return age is not None and age < settings.MONITOR_ALIVE_SECONDS

    @property
    def last_check(self) -> float | None:
        return _float(self.stats.get("last_check"))


def monitor_state() -> MonitorState:
    """Heartbeat, cache size, disconnected count, leader and watchdog stats (raises
    RedisError)."""
    pipe = events.sync_redis().pipeline(transaction=False)
    pipe.get(events.heartbeat_key())
    pipe.hlen(events.values_hash())
    pipe.scard(events.disconnected_set())
    pipe.get(events.lock_key())
    pipe.hgetall(events.stats_key())
    heartbeat, cached, disconnected, leader, stats = pipe.execute()
    return MonitorState(
        now=time.time(),
        heartbeat=_float(heartbeat),
        heartbeat_raw=_text(heartbeat),
        cached=cached,
        disconnected=disconnected,
        leader=_text(leader),
        stats={_text(k) or "": _text(v) or "" for k, v in stats.items()},
    )


class Heartbeat(TypedDict):
    timestamp: float | None
    alive: bool
    age_seconds: float | None
    error: str | None


def heartbeat_read() -> Heartbeat:
    """The monitor's heartbeat; never raises (a Redis failure is reported in ``error``)."""
    try:
        raw = events.sync_redis().get(events.heartbeat_key())
    except redis.RedisError as exc:
        return {"timestamp": None, "alive": False, "age_seconds": None, "error": str(exc)}
    timestamp = _float(raw)
    if timestamp is None:
        error = "No heartbeat from the monitor" if raw is None else "Unreadable heartbeat"
        return {"timestamp": None, "alive": False, "age_seconds": None, "error": error}
    age = round(max(0.0, time.time() - timestamp), 3)
    return {
        "timestamp": timestamp,
        "alive": age < settings.MONITOR_ALIVE_SECONDS,
        "age_seconds": age,
        "error": None,
    }


def monitor_health() -> dict[str, Any]:
    """GET health/monitor (raises RedisError)."""
    state = monitor_state()
    monitored = _int(state.stats.get("monitored_pvs"))
    return {
        "alive": state.alive,
        "last_heartbeat": iso(state.heartbeat),
        "heartbeat_age_seconds": state.age,
        "total_cached_pvs": state.cached,
        "connected_pvs": max(0, state.cached - state.disconnected),
        "disconnected_pvs": state.disconnected,
        "monitored_pvs": monitored if state.alive else 0,
        "active_subscriptions": _int(state.stats.get("connected_pvs")) if state.alive else 0,
        "monitor_running": state.alive,
        "watchdog_running": state.alive and bool(state.stats),
        "watchdog_last_check": iso(state.last_check),
    }


def monitor_status() -> dict[str, Any]:
    """GET health/monitor/status: healthy, stale (heartbeat > 30 s), unknown or error."""
    try:
        state = monitor_state()
    except redis.RedisError as exc:
        return {
            "status": "unknown",
            "message": f"Redis unavailable: {exc}",
            "age_seconds": None,
            "leader": None,
        }
    if state.heartbeat_raw is None:
        status, message = "unknown", "No heartbeat from the monitor"
    elif state.heartbeat is None:
        status, message = "error", f"Unreadable heartbeat: {state.heartbeat_raw!r}"
    elif (state.age or 0.0) > MONITOR_STALE_SECONDS:
        status, message = "stale", f"Last heartbeat {state.age:.1f} s ago"
    else:
        status, message = "healthy", "Monitor is running"
    return {"status": status, "message": message, "age_seconds": state.age, "leader": state.leader}


def _watchdog(stats: dict[str, str]) -> dict[str, Any]:
    try:
        errors = json.loads(stats.get("last_errors") or "[]")
    except ValueError:
        errors = []
    if not isinstance(errors, list):
        errors = []
    return {
        "last_check": iso(_float(stats.get("last_check"))),
        "check_count": _int(stats.get("check_count")),
        "disconnected_count": _int(stats.get("disconnected_count")),
        "stale_count": _int(stats.get("stale_count")),
        "reconnect_attempts": _int(stats.get("reconnect_attempts")),
        "successful_reconnects": _int(stats.get("successful_reconnects")),
        "failed_reconnects": _int(stats.get("failed_reconnects")),
        "last_errors": [str(e) for e in errors[-MAX_ERRORS:]],
    }


def watchdog_read() -> dict[str, Any]:
    """GET health/watchdog: the leader's watchdog statistics (raises RedisError)."""
    raw = events.sync_redis().hgetall(events.stats_key())
    return _watchdog({_text(k) or "": _text(v) or "" for k, v in raw.items()})


def _scan_cache(client: redis.Redis, max_age: float) -> tuple[list[str], list[str]]:
    """(disconnected, stale) addresses in the value hash; unreadable entries count as stale."""
    cutoff = time.time() - max_age
    disconnected: list[str] = []
    stale: list[str] = []
    for raw_name, data in client.hscan_iter(events.values_hash(), count=5000):
        name = raw_name.decode()
        try:
            entry = values.unpack(data)
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


def watchdog_check(*, max_age: float = DEFAULT_STALE_SECONDS) -> dict[str, Any]:
    """Recount disconnected and stale PVs from the cache, store the counts in the stats hash
    and return the watchdog statistics (raises RedisError)."""
    client = events.sync_redis()
    disconnected, stale = _scan_cache(client, max_age)
    flagged = client.smembers(events.disconnected_set())
    disconnected_count = len(set(disconnected) | {m.decode() for m in flagged})
    pipe = client.pipeline(transaction=False)
    pipe.hset(
        events.stats_key(),
        mapping={
            "disconnected_count": disconnected_count,
            "stale_count": len(stale),
            "last_check": time.time(),
        },
    )
    pipe.hincrby(events.stats_key(), "check_count", 1)
    pipe.hgetall(events.stats_key())
    raw = pipe.execute()[-1]
    return _watchdog({_text(k) or "": _text(v) or "" for k, v in raw.items()})


def disconnected_read() -> dict[str, Any]:
    """GET health/disconnected: the addresses the monitor marked disconnected, sorted."""
    names = sorted(m.decode() for m in events.sync_redis().smembers(events.disconnected_set()))
    return {"count": len(names), "pvs": names}


def stale_read(*, max_age: float = DEFAULT_STALE_SECONDS) -> dict[str, Any]:
    """GET health/stale: connected PVs not updated for ``max_age`` s (and unreadable ones)."""
    _, stale = _scan_cache(events.sync_redis(), max_age)
    stale.sort()
    return {"count": len(stale), "threshold_seconds": max_age, "pvs": stale}


def summary_read() -> dict[str, Any]:
    """GET health/summary: healthy, degraded or unhealthy, with the issues found; never
    raises."""
    try:
        state = monitor_state()
    except redis.RedisError as exc:
        return {
            "status": "unhealthy",
            "monitor_alive": False,
            "heartbeat_age_seconds": None,
            "total_pvs": 0,
            "connected_pvs": 0,
            "disconnected_pvs": 0,
            "disconnected_percentage": 0.0,
            "watchdog_running": False,
            "last_watchdog_check": None,
            "issues": [f"Health check failed: {exc}"],
        }
    total, disconnected = state.cached, state.disconnected
    percent = round(100.0 * disconnected / total, 2) if total else 0.0
    issues = []
    if not state.alive:
        issues.append(
            "Monitor is not alive: no heartbeat"
            if state.age is None
            else f"Monitor is not alive: last heartbeat {state.age:.1f} s ago"
        )
    if percent > HIGH_DISCONNECT_PERCENT:
        issues.append(f"High disconnection rate: {percent:.1f}% of PVs disconnected")
    elif percent > SOME_DISCONNECT_PERCENT:
        issues.append(f"Some PVs disconnected: {percent:.1f}%")
    status = "unhealthy" if not state.alive else ("degraded" if issues else "healthy")
    return {
        "status": status,
        "monitor_alive": state.alive,
        "heartbeat_age_seconds": state.age,
        "total_pvs": total,
        "connected_pvs": max(0, total - disconnected),
        "disconnected_pvs": disconnected,
        "disconnected_percentage": percent,
        "watchdog_running": state.alive and bool(state.stats),
        "last_watchdog_check": iso(state.last_check),
        "issues": issues,
    }


# --- circuit breakers ----------------------------------------------------------------------

_CIRCUIT_KEYS = ("name", "state", "failure_count", "success_count", "call_count")


def circuits_summary() -> dict[str, Any]:
    """GET health/circuits: every breaker; on a Redis failure zeros and ``error``."""
    from monitor.circuits import circuits_read

    try:
        states = circuits_read()
    except (redis.RedisError, ValueError) as exc:
        return {
            "open_circuit_count": 0,
            "total_circuits": 0,
            "open_circuits": [],
            "circuits": [],
            "error": str(exc),
        }
    circuits = [
        {
            **{key: state.get(key) for key in _CIRCUIT_KEYS},
            "last_failure": iso(_float(state.get("last_failure"))),
            "opened_at": iso(_float(state.get("opened_at"))),
        }
        for state in states
    ]
    open_names = [c["name"] for c in circuits if c["state"] == "open"]
    return {
        "open_circuit_count": len(open_names),
        "total_circuits": len(circuits),
        "open_circuits": open_names,
        "circuits": circuits,
        "error": None,
    }


def circuit_set(*, name: str, state: str) -> dict[str, Any]:
    """Force the breaker of IOC ``name`` open or closed (raises Unavailable if Redis is
    down)."""
    from monitor.circuits import circuit_force

    try:
        circuit_force(name=name, state=state)
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to force circuit '{name}' {state}: {exc}") from exc
    return {"success": True, "message": f"Circuit '{name}' forced {state}"}

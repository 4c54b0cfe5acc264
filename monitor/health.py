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
from datetime import UTC, datetime
from typing import Any, TypedDict

import redis
from django.conf import settings

from monitor import bridge, cache, values
from monitor.circuits import circuit_force, circuits_read
from squirrel.exceptions import Unavailable

DEFAULT_STALE_SECONDS = 300
MONITOR_STALE_SECONDS = 30.0  # monitor/status: "stale" beyond this heartbeat age
MAX_ERRORS = 10
DEFAULT_TEST_PV = "KLYS:LI22:31:KVAC"
HIDDEN = "hidden (staff only)"  # test-epics's EPICS_CA_ADDR_LIST for a caller that is not staff
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


def live_read(*, names: list[str]) -> dict[str, dict[str, Any]]:
    """CacheEntries of the ``names`` that are cached (one HMGET); uncached names left out."""
    try:
        return cache.wire_read(names)
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to get live values: {exc}") from exc


def live_read_all() -> dict[str, Any]:
    """Every cached CacheEntry: ``{"values": {addr: entry}, "count": n}``."""
    try:
        out = cache.wire_read_all()
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to get live values: {exc}") from exc
    return {"values": out, "count": len(out)}


def cache_status() -> dict[str, Any]:
    """How many values are cached, and whether Redis answers."""
    try:
        count = cache.cached_count()
    except redis.RedisError as exc:
        return {"cachedPvCount": 0, "status": "disconnected", "error": str(exc)}
    return {"cachedPvCount": count, "status": "connected", "error": None}


def epics_test(*, pv: str, show_addresses: bool) -> dict[str, Any]:
    """A direct Channel Access read of one PV, with the EPICS environment (a diagnostic).

    The read is a probe (``bridge.probe``): its failure opens no breaker. The address list
    says where the IOCs are; without ``show_addresses`` (staff only) it is reported hidden.
    """
    environment = {
        name: os.environ.get(name, "NOT SET")
        for name in ("EPICS_CA_ADDR_LIST", "EPICS_CA_AUTO_ADDR_LIST")
    }
    if not show_addresses:
        environment["EPICS_CA_ADDR_LIST"] = HIDDEN
    try:
        entry = bridge.probe(pv, settings.EPICS_TIMEOUT)
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


def _last_check(state: cache.MonitorState) -> float | None:
    return _float(state.stats.get("last_check"))


class Heartbeat(TypedDict):
    timestamp: float | None
    alive: bool
    age_seconds: float | None
    error: str | None


def heartbeat_read() -> Heartbeat:
    """The monitor's heartbeat (its oldest shard's); never raises (a Redis failure is reported
    in ``error``)."""
    try:
        state = cache.monitor_state()
    except redis.RedisError as exc:
        return {"timestamp": None, "alive": False, "age_seconds": None, "error": str(exc)}
    missing = state.liveness.missing()
    if missing is not None:
        error = missing if missing.startswith("No heartbeat") else missing.split(":")[0]
        return {"timestamp": None, "alive": False, "age_seconds": None, "error": error}
    return {
        "timestamp": state.liveness.oldest,
        "alive": state.liveness.alive,
        "age_seconds": state.liveness.oldest_age,
        "error": None,
    }


def monitor_health() -> dict[str, Any]:
    """GET health/monitor (raises RedisError)."""
    state = cache.monitor_state()
    alive = state.liveness.alive
    return {
        "alive": alive,
        "last_heartbeat": iso(state.liveness.oldest),
        "heartbeat_age_seconds": state.liveness.oldest_age,
        "total_cached_pvs": state.cached,
        "connected_pvs": max(0, state.cached - state.disconnected),
        "disconnected_pvs": state.disconnected,
        "monitored_pvs": _int(state.stats.get("monitored_pvs")) if alive else 0,
        "active_subscriptions": _int(state.stats.get("connected_pvs")) if alive else 0,
        "monitor_running": alive,
        "watchdog_running": alive and bool(state.stats),
        "watchdog_last_check": iso(_last_check(state)),
    }


def monitor_status() -> dict[str, Any]:
    """GET health/monitor/status: healthy, stale (heartbeat > 30 s), unknown or error."""
    try:
        state = cache.monitor_state()
    except redis.RedisError as exc:
        return {
            "status": "unknown",
            "message": f"Redis unavailable: {exc}",
            "age_seconds": None,
            "leader": None,
        }
    missing = state.liveness.missing()
    age = state.liveness.oldest_age
    if missing is not None and missing.startswith("No heartbeat"):
        status, message = "unknown", missing
    elif missing is not None:
        status, message = "error", missing
    elif (age or 0.0) > MONITOR_STALE_SECONDS:
        status, message = "stale", f"Last heartbeat {age:.1f} s ago"
    else:
        status, message = "healthy", "Monitor is running"
    return {"status": status, "message": message, "age_seconds": age, "leader": state.leader}


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
    return _watchdog(cache.stats_read())


def watchdog_check(*, max_age: float = DEFAULT_STALE_SECONDS) -> dict[str, Any]:
    """Recount disconnected and stale PVs from the cache, store the counts in the stats hash
    and return the watchdog statistics (raises RedisError)."""
    disconnected, stale = cache.cache_scan(max_age)
    flagged = cache.disconnected_read()
    count = len(set(disconnected) | set(flagged))
    return _watchdog(cache.stats_recount(disconnected=count, stale=len(stale)))


def disconnected_read() -> dict[str, Any]:
    """GET health/disconnected: the addresses the monitor marked disconnected, sorted."""
    names = sorted(cache.disconnected_read())
    return {"count": len(names), "pvs": names}


def stale_read(*, max_age: float = DEFAULT_STALE_SECONDS) -> dict[str, Any]:
    """GET health/stale: connected PVs not updated for ``max_age`` s (and unreadable ones)."""
    _, stale = cache.cache_scan(max_age)
    stale.sort()
    return {"count": len(stale), "threshold_seconds": max_age, "pvs": stale}


def summary_read() -> dict[str, Any]:
    """GET health/summary: healthy, degraded or unhealthy, with the issues found; never
    raises."""
    try:
        state = cache.monitor_state()
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
    liveness, age = state.liveness, state.liveness.oldest_age
    if not liveness.alive:
        dead = liveness.dead_shards
        which = "" if liveness.shards == 1 else f" (shards {', '.join(map(str, dead))})"
        issues.append(
            f"Monitor is not alive{which}: no heartbeat"
            if age is None
            else f"Monitor is not alive{which}: last heartbeat {age:.1f} s ago"
        )
    if percent > HIGH_DISCONNECT_PERCENT:
        issues.append(f"High disconnection rate: {percent:.1f}% of PVs disconnected")
    elif percent > SOME_DISCONNECT_PERCENT:
        issues.append(f"Some PVs disconnected: {percent:.1f}%")
    status = "unhealthy" if not state.liveness.alive else ("degraded" if issues else "healthy")
    return {
        "status": status,
        "monitor_alive": state.liveness.alive,
        "heartbeat_age_seconds": state.liveness.oldest_age,
        "total_pvs": total,
        "connected_pvs": max(0, total - disconnected),
        "disconnected_pvs": disconnected,
        "disconnected_percentage": percent,
        "watchdog_running": state.liveness.alive and bool(state.stats),
        "last_watchdog_check": iso(_last_check(state)),
        "issues": issues,
    }


# --- circuit breakers ----------------------------------------------------------------------

_CIRCUIT_KEYS = ("name", "state", "failure_count", "success_count", "call_count")


def circuits_summary() -> dict[str, Any]:
    """GET health/circuits: every breaker; on a Redis failure zeros and ``error``."""
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
    try:
        circuit_force(name=name, state=state)
    except redis.RedisError as exc:
        raise Unavailable(f"Failed to force circuit '{name}' {state}: {exc}") from exc
    return {"success": True, "message": f"Circuit '{name}' forced {state}"}

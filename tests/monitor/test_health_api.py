"""The /v1/health routes over what the monitor writes into Redis (contract §10)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import msgpack
import pytest

from monitor import events, values
from tests.conftest import payload

DOWN_URL = "redis://127.0.0.1:1/0"
MONITOR_KEYS = {
    "alive",
    "last_heartbeat",
    "heartbeat_age_seconds",
    "total_cached_pvs",
    "connected_pvs",
    "disconnected_pvs",
    "monitored_pvs",
    "active_subscriptions",
    "monitor_running",
    "watchdog_running",
    "watchdog_last_check",
}
WATCHDOG_KEYS = {
    "last_check",
    "check_count",
    "disconnected_count",
    "stale_count",
    "reconnect_attempts",
    "successful_reconnects",
    "failed_reconnects",
    "last_errors",
}


def _entry(*, connected: bool = True, age: float = 0.0) -> bytes:
    return values.pack(
        {"value": 1.0, "connected": connected, "updated_at": time.time() - age, "severity": 0}
    )


def _stats(**fields) -> dict:
    base = {
        "leader": "host:1:abcd",
        "started_at": time.time() - 100,
        "last_check": time.time() - 1,
        "check_count": 42,
        "monitored_pvs": 4,
        "connected_pvs": 3,
        "disconnected_count": 1,
        "stale_count": 0,
        "reconnect_attempts": 2,
        "successful_reconnects": 1,
        "failed_reconnects": 1,
        "last_errors": json.dumps([f"error {i}" for i in range(12)]),
        "updates_total": 1000,
        "updates_dropped": 0,
    }
    return {**base, **fields}


@pytest.fixture
def monitor_up(redis_client):
    """A running monitor: fresh heartbeat, lock, stats, 4 cached values, 1 disconnected."""
    redis_client.set(events.heartbeat_key(), str(time.time()))
    redis_client.set(events.lock_key(), "host:1:abcd")
    redis_client.hset(events.stats_key(), mapping=_stats())
    redis_client.hset(
        events.values_hash(),
        mapping={
            "SIM:B": _entry(),
            "SIM:A": _entry(),
            "SIM:OLD": _entry(age=1000),
            "SIM:GONE": _entry(connected=False),
        },
    )
    redis_client.sadd(events.disconnected_set(), "SIM:GONE")
    return redis_client


def _bare(response, status: int = 200) -> dict:
    body = response.json()
    assert response.status_code == status, body
    assert "errorCode" not in body and "payload" not in body, body
    return body


def _iso_age(text: str) -> float:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return time.time() - moment.timestamp()


# heartbeat ------------------------------------------------------------------------------------


def test_heartbeat_alive(api, monitor_up, settings):
    settings.ANONYMOUS_ACCESS = "none"  # no auth on this route
    body = payload(api.get("/v1/health/heartbeat"))
    assert set(body) == {"timestamp", "alive", "age_seconds", "error"}
    assert body["alive"] is True and body["error"] is None
    assert 0 <= body["age_seconds"] < 5
    assert body["timestamp"] == pytest.approx(time.time(), abs=5)


def test_heartbeat_ignores_a_bad_key(api, monitor_up):
    api.credentials(HTTP_X_API_KEY="sq_not-a-key")
    assert payload(api.get("/v1/health/heartbeat"))["alive"] is True


def test_heartbeat_old_and_missing(api, redis_client):
    body = payload(api.get("/v1/health/heartbeat"))
    assert body["alive"] is False and body["timestamp"] is None and body["age_seconds"] is None
    assert body["error"]
    redis_client.set(events.heartbeat_key(), str(time.time() - 10))
    body = payload(api.get("/v1/health/heartbeat"))
    assert body["alive"] is False and body["error"] is None
    assert body["age_seconds"] == pytest.approx(10, abs=2)


def test_heartbeat_redis_down_is_200(api, redis_down):
    body = payload(api.get("/v1/health/heartbeat"))
    assert body["alive"] is False and body["timestamp"] is None and body["age_seconds"] is None
    assert isinstance(body["error"], str) and body["error"]


# monitor, monitor/status ----------------------------------------------------------------------


def test_monitor_health(api, monitor_up):
    body = _bare(api.get("/v1/health/monitor"))
    assert set(body) == MONITOR_KEYS
    assert body["alive"] is True and body["monitor_running"] is True
    assert body["watchdog_running"] is True
    assert _iso_age(body["last_heartbeat"]) < 5
    assert _iso_age(body["watchdog_last_check"]) < 5
    assert (body["total_cached_pvs"], body["connected_pvs"], body["disconnected_pvs"]) == (4, 3, 1)
    assert (body["monitored_pvs"], body["active_subscriptions"]) == (4, 3)


def test_monitor_health_without_monitor(api, redis_client):
    body = _bare(api.get("/v1/health/monitor"))
    assert body["alive"] is False and body["last_heartbeat"] is None
    assert body["heartbeat_age_seconds"] is None and body["watchdog_last_check"] is None
    assert body["total_cached_pvs"] == body["monitored_pvs"] == 0
    assert body["watchdog_running"] is False


def test_monitor_health_redis_down_is_503(api, redis_down):
    body = _bare(api.get("/v1/health/monitor"), 503)
    assert body["detail"].startswith("Health check failed: ")


def test_monitor_health_needs_read_scope(api, settings, db):
    settings.ANONYMOUS_ACCESS = "none"
    assert _bare(api.get("/v1/health/monitor"), 401) == {"detail": "Missing or deactivated API key"}


def test_monitor_status(api, monitor_up):
    body = _bare(api.get("/v1/health/monitor/status"))
    assert body["status"] == "healthy" and body["leader"] == "host:1:abcd"
    assert set(body) == {"status", "message", "age_seconds", "leader"}
    assert 0 <= body["age_seconds"] < 5
    monitor_up.set(events.heartbeat_key(), str(time.time() - 60))
    body = _bare(api.get("/v1/health/monitor/status"))
    assert body["status"] == "stale" and body["age_seconds"] == pytest.approx(60, abs=2)
    monitor_up.set(events.heartbeat_key(), "garbage")
    assert _bare(api.get("/v1/health/monitor/status"))["status"] == "error"
    monitor_up.delete(events.heartbeat_key(), events.lock_key())
    assert _bare(api.get("/v1/health/monitor/status")) == {
        "status": "unknown",
        "message": "No heartbeat from the monitor",
        "age_seconds": None,
        "leader": None,
    }


def test_monitor_status_redis_down_is_unknown(api, redis_down):
    body = _bare(api.get("/v1/health/monitor/status"))
    assert body["status"] == "unknown" and body["age_seconds"] is None and body["message"]


# summary --------------------------------------------------------------------------------------


def test_summary_degraded_when_over_ten_percent_disconnected(api, monitor_up):
    body = _bare(api.get("/v1/health/summary"))
    assert set(body) == {
        "status",
        "monitor_alive",
        "heartbeat_age_seconds",
        "total_pvs",
        "connected_pvs",
        "disconnected_pvs",
        "disconnected_percentage",
        "watchdog_running",
        "last_watchdog_check",
        "issues",
    }
    assert body["status"] == "degraded" and body["monitor_alive"] is True
    assert (body["total_pvs"], body["connected_pvs"], body["disconnected_pvs"]) == (4, 3, 1)
    assert body["disconnected_percentage"] == 25.0
    assert len(body["issues"]) == 1 and "25.0%" in body["issues"][0]


def test_summary_healthy_and_slightly_degraded(api, monitor_up):
    monitor_up.hset(events.values_hash(), mapping={f"SIM:X{i}": _entry() for i in range(96)})
    body = _bare(api.get("/v1/health/summary"))  # 1 of 100 disconnected: not above 1 %
    assert body["status"] == "healthy" and body["issues"] == []
    assert body["disconnected_percentage"] == 1.0
    monitor_up.sadd(events.disconnected_set(), "SIM:X0")
    body = _bare(api.get("/v1/health/summary"))
    assert body["status"] == "degraded" and body["disconnected_percentage"] == 2.0
    assert len(body["issues"]) == 1 and "2.0%" in body["issues"][0]


def test_summary_unhealthy_without_heartbeat(api, monitor_up):
    monitor_up.delete(events.heartbeat_key())
    body = _bare(api.get("/v1/health/summary"))
    assert body["status"] == "unhealthy" and body["monitor_alive"] is False
    assert body["watchdog_running"] is False
    assert any("not alive" in issue for issue in body["issues"])


def test_summary_redis_down_is_200_unhealthy(api, redis_down):
    body = _bare(api.get("/v1/health/summary"))
    assert body["status"] == "unhealthy" and body["monitor_alive"] is False
    assert body["total_pvs"] == body["connected_pvs"] == body["disconnected_pvs"] == 0
    assert body["disconnected_percentage"] == 0.0
    assert len(body["issues"]) == 1 and body["issues"][0].startswith("Health check failed: ")


# disconnected, stale --------------------------------------------------------------------------


def test_disconnected(api, monitor_up):
    monitor_up.sadd(events.disconnected_set(), "SIM:ANOTHER")
    assert _bare(api.get("/v1/health/disconnected")) == {
        "count": 2,
        "pvs": ["SIM:ANOTHER", "SIM:GONE"],
    }


def test_disconnected_redis_down_is_503(api, redis_down):
    assert _bare(api.get("/v1/health/disconnected"), 503)["detail"]


def test_stale(api, monitor_up):
    monitor_up.hset(events.values_hash(), "SIM:BROKEN", b"\xc1")
    monitor_up.hset(events.values_hash(), "SIM:NOTIME", values.pack({"connected": True}))
    assert _bare(api.get("/v1/health/stale")) == {
        "count": 3,
        "threshold_seconds": 300,
        "pvs": ["SIM:BROKEN", "SIM:NOTIME", "SIM:OLD"],
    }
    monitor_up.hset(events.values_hash(), "SIM:MID", _entry(age=60))
    body = _bare(api.get("/v1/health/stale", {"max_age_seconds": "30"}))
    assert body["threshold_seconds"] == 30
    assert body["pvs"] == ["SIM:BROKEN", "SIM:MID", "SIM:NOTIME", "SIM:OLD"]
    body = _bare(api.get("/v1/health/stale", {"max_age_seconds": "2000"}))
    assert body["pvs"] == ["SIM:BROKEN", "SIM:NOTIME"]


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", ""])
def test_stale_rejects_bad_threshold(api, redis_client, value):
    body = _bare(api.get("/v1/health/stale", {"max_age_seconds": value}), 422)
    assert "max_age_seconds" in body["detail"]


def test_stale_redis_down_is_503(api, redis_down):
    assert _bare(api.get("/v1/health/stale"), 503)["detail"]


# watchdog -------------------------------------------------------------------------------------


def test_watchdog(api, monitor_up):
    body = _bare(api.get("/v1/health/watchdog"))
    assert set(body) == WATCHDOG_KEYS
    assert body["check_count"] == 42 and body["disconnected_count"] == 1
    assert (body["reconnect_attempts"], body["successful_reconnects"]) == (2, 1)
    assert body["failed_reconnects"] == 1 and body["stale_count"] == 0
    assert body["last_errors"] == [f"error {i}" for i in range(2, 12)]
    assert _iso_age(body["last_check"]) < 5


def test_watchdog_without_monitor(api, redis_client):
    body = _bare(api.get("/v1/health/watchdog"))
    assert body == {
        "last_check": None,
        "check_count": 0,
        "disconnected_count": 0,
        "stale_count": 0,
        "reconnect_attempts": 0,
        "successful_reconnects": 0,
        "failed_reconnects": 0,
        "last_errors": [],
    }


def test_watchdog_redis_down_is_503(api, redis_down):
    assert _bare(api.get("/v1/health/watchdog"), 503)["detail"]


def test_watchdog_check_recounts_and_stores(write_client, monitor_up):
    monitor_up.hset(events.stats_key(), mapping={"disconnected_count": 9, "stale_count": 9})
    monitor_up.hset(events.stats_key(), "last_check", time.time() - 1000)
    monitor_up.sadd(events.disconnected_set(), "SIM:FLAGGED")  # flagged, no entry yet
    body = _bare(write_client.post("/v1/health/watchdog/check"))
    assert set(body) == WATCHDOG_KEYS
    assert body["disconnected_count"] == 2 and body["stale_count"] == 1
    assert body["check_count"] == 43
    assert _iso_age(body["last_check"]) < 5
    stored = monitor_up.hgetall(events.stats_key())
    assert stored[b"disconnected_count"] == b"2" and stored[b"stale_count"] == b"1"
    assert stored[b"check_count"] == b"43"


def test_watchdog_check_needs_write_scope(read_client, api, redis_client):
    assert _bare(read_client.post("/v1/health/watchdog/check"), 401) == {
        "detail": "API key does not have write access"
    }
    assert _bare(api.post("/v1/health/watchdog/check"), 401)["detail"]
    assert not redis_client.exists(events.stats_key())


def test_watchdog_check_redis_down_is_503(write_client, redis_down):
    assert _bare(write_client.post("/v1/health/watchdog/check"), 503)["detail"]


# circuits -------------------------------------------------------------------------------------


def _circuit(name: str, state: str, **extra) -> bytes:
    data = {
        "name": name,
        "state": state,
        "failure_count": 0,
        "success_count": 3,
        "call_count": 3,
        "last_failure": None,
        "opened_at": None,
        "forced": None,
        **extra,
    }
    return msgpack.packb(data, use_bin_type=True)


def test_circuits(api, redis_client):
    assert _bare(api.get("/v1/health/circuits")) == {
        "open_circuit_count": 0,
        "total_circuits": 0,
        "open_circuits": [],
        "circuits": [],
        "error": None,
    }
    failed = time.time() - 5
    redis_client.hset(
        events.circuits_key(),
        mapping={
            "SIM:B": _circuit("SIM:B", "closed"),
            "SIM:A": _circuit(
                "SIM:A", "open", failure_count=5, last_failure=failed, opened_at=failed
            ),
        },
    )
    body = _bare(api.get("/v1/health/circuits"))
    assert body["open_circuit_count"] == 1 and body["total_circuits"] == 2
    assert body["open_circuits"] == ["SIM:A"] and body["error"] is None
    first, second = body["circuits"]
    assert set(first) == {
        "name",
        "state",
        "failure_count",
        "success_count",
        "call_count",
        "last_failure",
        "opened_at",
    }
    assert (first["name"], first["state"], first["failure_count"]) == ("SIM:A", "open", 5)
    assert _iso_age(first["last_failure"]) == pytest.approx(5, abs=2)
    assert _iso_age(first["opened_at"]) == pytest.approx(5, abs=2)
    assert second == {
        "name": "SIM:B",
        "state": "closed",
        "failure_count": 0,
        "success_count": 3,
        "call_count": 3,
        "last_failure": None,
        "opened_at": None,
    }


def test_circuits_redis_down_reports_error(api, redis_down):
    body = _bare(api.get("/v1/health/circuits"))
    assert body["open_circuit_count"] == body["total_circuits"] == 0
    assert body["circuits"] == [] and body["open_circuits"] == []
    assert isinstance(body["error"], str) and body["error"]


def test_force_circuit_open_and_closed(write_client, api, redis_client):
    body = _bare(write_client.post("/v1/health/circuits/SIM:IOC1/open"))
    assert body == {"success": True, "message": "Circuit 'SIM:IOC1' forced open"}
    listed = _bare(api.get("/v1/health/circuits"))
    assert listed["open_circuits"] == ["SIM:IOC1"]
    assert listed["circuits"][0]["opened_at"] is not None
    body = _bare(write_client.post("/v1/health/circuits/SIM:IOC1/close"))
    assert body == {"success": True, "message": "Circuit 'SIM:IOC1' forced closed"}
    listed = _bare(api.get("/v1/health/circuits"))
    assert listed["open_circuits"] == [] and listed["circuits"][0]["state"] == "closed"


def test_force_circuit_needs_write_scope(read_client, redis_client):
    response = read_client.post("/v1/health/circuits/SIM:IOC1/open")
    assert _bare(response, 401) == {"detail": "API key does not have write access"}
    assert not redis_client.exists(events.circuits_key())


def test_force_circuit_get_is_405(write_client, redis_client):
    assert _bare(write_client.get("/v1/health/circuits/SIM:IOC1/open"), 405)["detail"]


def test_force_circuit_redis_down_is_503(write_client, redis_down):
    body = _bare(write_client.post("/v1/health/circuits/SIM:IOC1/close"), 503)
    assert body["detail"].startswith("Failed to force circuit 'SIM:IOC1' closed: ")

"""Live values from the Redis cache: /v1/pvs/live, /live/all, /cache/status (test-epics:
test_test_epics.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from monitor import events, values
from tests.conftest import error, payload
from tests.epics import MANAGE, run_sim_ioc

NOW = time.time()
ANALOG = {
    "value": 1.5,
    "connected": True,
    "updated_at": NOW,
    "status": 0,
    "severity": 0,
    "timestamp": NOW - 1,
    "units": "mA",
    "precision": 3,
    "upper_ctrl_limit": 10.0,
    "lower_ctrl_limit": -10.0,
}
ANALOG_WIRE = {
    "value": 1.5,
    "connected": True,
    "updated_at": NOW,
    "status": "NO_ALARM",
    "severity": 0,
    "timestamp": NOW - 1,
    "units": "mA",
    "precision": 3,
}


def _put(client, name: str, entry: dict) -> None:
    client.hset(events.values_hash(), name, values.pack(entry))


@pytest.fixture
def cached(redis_client):
    """A cache with an analog, an enum, a disconnected PV, NaN/Inf values and a corrupt entry."""
    _put(redis_client, "SIM:A", ANALOG)
    _put(
        redis_client,
        "ca://SIM:MODE",
        {
            "value": "ON",
            "index": 1,
            "enum_strs": ["OFF", "ON"],
            "connected": True,
            "updated_at": NOW,
            "status": 7,
            "severity": 1,
        },
    )
    _put(
        redis_client,
        "SIM:GONE",
        {"value": None, "connected": False, "updated_at": NOW, "error": values.DISCONNECTED},
    )
    _put(redis_client, "SIM:NAN", {"value": float("nan"), "connected": True, "updated_at": NOW})
    _put(
        redis_client,
        "SIM:WAVE",
        {"value": [1.0, float("inf"), -float("inf")], "connected": True, "updated_at": NOW},
    )
    redis_client.hset(events.values_hash(), "SIM:CORRUPT", b"\xc1not msgpack")
    return redis_client


@pytest.fixture
def keys_required(settings):
    settings.ANONYMOUS_ACCESS = "none"


# POST /v1/pvs/live ----------------------------------------------------------------------------


def test_post_live_returns_cached_entries_only(api, cached):
    body = payload(
        api.post(
            "/v1/pvs/live",
            {"pv_names": ["SIM:A", "ca://SIM:MODE", "SIM:GONE", "SIM:NOPE", "SIM:A"]},
            format="json",
        )
    )
    assert body == {
        "SIM:A": ANALOG_WIRE,
        "ca://SIM:MODE": {  # an enum: its index as the value (as saved), the label beside it
            "value": 1,
            "label": "ON",
            "enum_strs": ["OFF", "ON"],
            "connected": True,
            "updated_at": NOW,
            "status": "STATE",
            "severity": 1,
        },
        "SIM:GONE": {
            "value": None,
            "connected": False,
            "updated_at": NOW,
            "error": values.DISCONNECTED,
        },
    }


def test_post_live_turns_nan_and_inf_into_null(api, cached):
    response = api.post("/v1/pvs/live", {"pv_names": ["SIM:NAN", "SIM:WAVE"]}, format="json")
    assert b"NaN" not in response.content and b"Infinity" not in response.content
    body = payload(response)
    assert body["SIM:NAN"]["value"] is None
    assert body["SIM:WAVE"]["value"] == [1.0, None, None]


def test_post_live_leaves_out_corrupt_entries_and_empty_list(api, cached):
    assert payload(api.post("/v1/pvs/live", {"pv_names": ["SIM:CORRUPT"]}, format="json")) == {}
    assert payload(api.post("/v1/pvs/live", {"pv_names": []}, format="json")) == {}


def test_post_live_exact_names_are_not_trimmed(api, cached):
    body = payload(api.post("/v1/pvs/live", {"pv_names": [" SIM:A", "SIM:A "]}, format="json"))
    assert body == {}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "pv_names"]),
        ({"pvNames": ["SIM:A"]}, ["body", "pv_names"]),
        ({"pv_names": "SIM:A"}, ["body", "pv_names"]),
        ({"pv_names": None}, ["body", "pv_names"]),
        ({"pv_names": ["SIM:A", 3]}, ["body", "pv_names", "1"]),
        (["SIM:A"], ["body", "pv_names"]),
    ],
)
def test_post_live_rejects_bad_bodies_with_422(api, redis_client, body, loc):
    response = api.post("/v1/pvs/live", body, format="json")
    assert "pv_names" in error(response, 422)
    assert response.json()["errors"][0]["loc"] == loc


def test_post_live_rejects_malformed_json(api, redis_client):
    response = api.post("/v1/pvs/live", b"{not json", content_type="application/json")
    error(response, 422)


def test_post_live_body_too_large_is_413(api, cached, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = api.post("/v1/pvs/live", {"pv_names": ["SIM:A"] * 50}, format="json")
    assert "too large" in error(response, 413)


def test_post_live_needs_only_read_scope(read_client, cached, keys_required, api):
    body = payload(read_client.post("/v1/pvs/live", {"pv_names": ["SIM:A"]}, format="json"))
    assert body == {"SIM:A": ANALOG_WIRE}
    assert "API key" in error(api.post("/v1/pvs/live", {"pv_names": []}, format="json"), 401)


def test_post_live_redis_down_is_503_in_the_envelope(api, redis_down):
    response = api.post("/v1/pvs/live", {"pv_names": ["SIM:A"]}, format="json")
    assert error(response, 503).startswith("Failed to get live values: ")


# GET /v1/pvs/live, /live/all, /cache/status ---------------------------------------------------


def test_get_live_with_repeated_names(api, cached):
    body = payload(api.get("/v1/pvs/live", {"pv_names": ["SIM:A", "SIM:NOPE", "SIM:NAN"]}))
    assert body == {
        "SIM:A": ANALOG_WIRE,
        "SIM:NAN": {"value": None, "connected": True, "updated_at": NOW},
    }


def test_get_live_requires_pv_names(api, redis_client):
    response = api.get("/v1/pvs/live")
    assert "pv_names" in error(response, 422)
    assert response.json()["errors"][0]["loc"] == ["query", "pv_names"]


def test_get_live_needs_read_scope(api, keys_required, db):
    assert "API key" in error(api.get("/v1/pvs/live", {"pv_names": "SIM:A"}), 401)


def test_live_all(api, cached):
    body = payload(api.get("/v1/pvs/live/all"))
    assert body["count"] == 5  # the corrupt entry is left out
    assert set(body["values"]) == {"SIM:A", "ca://SIM:MODE", "SIM:GONE", "SIM:NAN", "SIM:WAVE"}
    assert body["values"]["SIM:A"] == ANALOG_WIRE
    assert body["values"]["SIM:WAVE"]["value"] == [1.0, None, None]


def test_live_all_empty_and_redis_down(api, redis_client, settings):
    assert payload(api.get("/v1/pvs/live/all")) == {"values": {}, "count": 0}
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert error(api.get("/v1/pvs/live/all"), 503).startswith("Failed to get live values: ")


def test_cache_status(api, cached):
    assert payload(api.get("/v1/pvs/cache/status")) == {
        "cachedPvCount": 6,
        "status": "connected",
        "error": None,
    }


def test_cache_status_redis_down(api, redis_down):
    body = payload(api.get("/v1/pvs/cache/status"))
    assert body["cachedPvCount"] == 0 and body["status"] == "disconnected"
    assert isinstance(body["error"], str) and body["error"]


# End to end: sim IOC -> manage.py monitor -> Redis -> these endpoints ------------------------


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.mark.epics
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_live_values_from_a_monitored_sim_ioc(api, redis_client, tmp_path):
    with run_sim_ioc(20, update_share=0.0) as ioc:
        csv_path = tmp_path / "pvs.csv"
        call_command("sim_ioc", count=20, prefix=ioc.prefix, write_csv=csv_path, csv_only=True)
        call_command("import_pvs", str(csv_path), no_progress=True)
        db = django_settings.DATABASES["default"]
        env = {
            **os.environ,
            **ioc.env,
            "SQUIRREL_DATABASE_URL": (
                f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "SQUIRREL_SECRET_KEY": django_settings.SECRET_KEY,
        }
        log_path = tmp_path / "monitor.log"  # its log, shown if the heartbeat never comes
        log_file = log_path.open("w")
        monitor = subprocess.Popen(
            [sys.executable, str(MANAGE), "monitor", "--max-seconds", "60"],
            env={**env, "SQUIRREL_LOG_LEVEL": "INFO"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            names = [ioc.setpoint(0), ioc.readback(0), ioc.readback(1), ioc.readback(4)]

            def live():
                body = payload(api.post("/v1/pvs/live", {"pv_names": names}, format="json"))
                return body if len(body) == len(names) else None

            body = _wait_for(live, 30, "live values of the sim IOC")
            assert body[ioc.setpoint(0)]["value"] == 1.0
            assert body[ioc.setpoint(0)]["units"] == "A"
            assert body[ioc.setpoint(0)]["connected"] is True
            assert body[ioc.readback(1)]["value"] == 1
            assert body[ioc.readback(1)]["label"] == "ON"
            assert body[ioc.readback(1)]["enum_strs"] == ["OFF", "ON"]
            assert body[ioc.readback(4)]["value"] == pytest.approx(3.0, abs=0.01)
            # Values can be flushed a moment before the first heartbeat lands (a CI run
            # once read them in between): wait for it, and say why if it never comes.
            beat: dict = {}

            def alive() -> bool:
                beat.update(payload(api.get("/v1/health/heartbeat")))
                return beat["alive"] is True

            try:
                _wait_for(alive, 10, "the monitor's heartbeat")
            except AssertionError:
                raise AssertionError(
                    f"no live heartbeat: {beat}; monitor log:\n{log_path.read_text()[-3000:]}"
                ) from None
            summary = api.get("/v1/health/summary").json()
            assert summary["status"] == "healthy" and summary["total_pvs"] == 38

            ioc.write(ioc.setpoint(0), 7.5)
            _wait_for(
                lambda: abs(live()[ioc.readback(0)]["value"] - 7.5) < 0.01,
                10,
                "the put reaching the live readback",
            )

            ioc.kill()  # the IOC crashes: the monitor marks its PVs disconnected
            _wait_for(
                lambda: api.get("/v1/health/disconnected").json()["count"] == 38,
                30,
                "every PV disconnected",
            )
            assert api.get("/v1/health/summary").json()["status"] == "degraded"
            gone = payload(api.post("/v1/pvs/live", {"pv_names": names}, format="json"))
            assert gone[ioc.setpoint(0)]["connected"] is False
        finally:
            monitor.send_signal(signal.SIGTERM)
            try:
                monitor.wait(15)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()
            log_file.close()
    assert monitor.returncode == 0

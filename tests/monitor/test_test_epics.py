"""GET /v1/pvs/test-epics (contract §2.3): who may read what, who sees the EPICS address list,
and that its reads of names nobody serves open no circuit breaker (issue 15, item 8)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from monitor.circuits import CircuitBreakers, circuit_force, circuits_read
from monitor.health import HIDDEN
from pvs.models import PV
from tests.conftest import error, payload
from tests.epics import epics_environ, run_sim_ioc

pytestmark = pytest.mark.django_db

URL = "/v1/pvs/test-epics"


@pytest.fixture
def nowhere(settings, monkeypatch):
    """EPICS that finds nothing, fast: no address list, no broadcast."""
    settings.EPICS_TIMEOUT = 0.2
    settings.EPICS_CONNECT_TIMEOUT = 0.2
    monkeypatch.delenv("EPICS_CA_ADDR_LIST", raising=False)
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "NO")


@pytest.fixture
def breakers(monkeypatch, redis_client) -> CircuitBreakers:
    """This process's shared breakers, fresh for the test (threshold 5, the default)."""
    fresh = CircuitBreakers(threshold=5, cool_down=60)
    monkeypatch.setattr(CircuitBreakers, "_shared", fresh)
    return fresh


@pytest.fixture
def staff(db) -> APIClient:
    client = APIClient()
    client.force_login(get_user_model().objects.create_user("op", password="pw", is_staff=True))
    return client


def test_read_scope_reads_catalog_addresses_only(api, read_client, write_client, settings, nowhere):
    PV.objects.create(setpoint_address="CAT:A:SP", readback_address="CAT:A:RBV")
    PV.objects.create(config_address="CAT:C:CFG")
    for name in ("CAT:A:SP", "CAT:A:RBV", "CAT:C:CFG"):
        body = payload(read_client.get(URL, {"pv": name}))
        assert body["pv"] == name and body["connected"] is False and body["error"]
        assert body["value"] is None
        payload(api.get(URL, {"pv": name}))  # anonymous read, as the setting says
    # a name outside the catalog reads the machine beyond it: write scope
    for params in ({"pv": "OUT:SIDE:PV"}, {"pv": "CAT:A"}, {}):  # {}: the default PV
        assert error(read_client.get(URL, params), 401) == "API key does not have write access"
        assert error(api.get(URL, params), 401) == "Missing or deactivated API key"
    assert payload(write_client.get(URL, {"pv": "OUT:SIDE:PV"}))["pv"] == "OUT:SIDE:PV"
    assert payload(write_client.get(URL))["pv"] == "KLYS:LI22:31:KVAC"
    settings.ANONYMOUS_ACCESS = "write"
    payload(api.get(URL, {"pv": "OUT:SIDE:PV"}))
    settings.ANONYMOUS_ACCESS = "none"
    error(api.get(URL, {"pv": "CAT:A:SP"}), 401)


def test_bad_pv_parameter_is_422(write_client, nowhere):
    assert "pv" in error(write_client.get(URL, {"pv": "A\x00B"}), 422)
    assert "pv" in error(write_client.get(URL, {"pv": "A" * 256}), 422)


def test_only_staff_see_the_address_list(api, write_client, staff, nowhere, monkeypatch):
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.0.0.2 127.0.0.3")
    PV.objects.create(setpoint_address="CAT:A:SP")
    for client in (write_client, api):
        response = client.get(URL, {"pv": "CAT:A:SP"})
        assert payload(response)["environment"] == {
            "EPICS_CA_ADDR_LIST": HIDDEN,
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
        }
        assert "127.0.0.2" not in response.content.decode()
    body = payload(staff.get(URL, {"pv": "OUT:SIDE:PV"}))  # staff: any name, and the list
    assert body["environment"] == {
        "EPICS_CA_ADDR_LIST": "127.0.0.2 127.0.0.3",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
    }
    monkeypatch.delenv("EPICS_CA_ADDR_LIST")
    assert payload(staff.get(URL))["environment"]["EPICS_CA_ADDR_LIST"] == "NOT SET"


def test_missing_names_open_no_breaker_and_add_none(write_client, breakers, nowhere):
    breakers.record({"REAL:IOC": True})  # a real IOC that answered a capture
    for i in range(6):
        body = payload(write_client.get(URL, {"pv": f"REAL:IOC:NOPE{i}"}))
        assert body["connected"] is False and "circuit breaker" not in body["error"]
    for i in range(3):
        payload(write_client.get(URL, {"pv": f"GHOST{i}:X:Y"}))
    (state,) = circuits_read()
    assert (state["name"], state["state"], state["failure_count"]) == ("REAL:IOC", "closed", 0)
    assert set(breakers.states) == {"REAL:IOC"}
    assert breakers.allow("REAL:IOC")


@pytest.mark.epics
def test_test_epics_against_a_sim_ioc(api, write_client, breakers, settings):
    settings.EPICS_TIMEOUT = 1.0
    settings.EPICS_CONNECT_TIMEOUT = 1.0
    with run_sim_ioc(5) as ioc, epics_environ(ioc.port):
        real = ioc.setpoint(0)
        PV.objects.create(setpoint_address=real)
        body = payload(api.get(URL, {"pv": real}))
        assert body == {
            "pv": real,
            "connected": True,
            "value": 1.0,
            "error": None,
            "environment": {"EPICS_CA_ADDR_LIST": HIDDEN, "EPICS_CA_AUTO_ADDR_LIST": "NO"},
        }
        # six reads of missing PVs of that IOC (ioc_name: its first two parts) ...
        ioc_of_real = real.rsplit(":", 1)[0]
        for i in range(6):
            missing = payload(write_client.get(URL, {"pv": f"{ioc_of_real}:NOPE{i}"}))
            assert missing["connected"] is False and missing["value"] is None
            assert "circuit breaker" not in missing["error"]
        # ... leave its breaker closed: the real PV still reads
        assert payload(api.get(URL, {"pv": real}))["connected"] is True
        assert [(c["name"], c["state"]) for c in circuits_read()] == [(ioc_of_real, "closed")]
        # an open breaker still refuses the diagnostic at once
        circuit_force(name=ioc_of_real, state="open")
        breakers.forced_read_at = 0.0  # re-read the forced state now, not within a second
        refused = payload(api.get(URL, {"pv": real}))
        assert refused["connected"] is False and "circuit breaker open" in refused["error"]

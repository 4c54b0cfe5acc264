"""The short load test of issue 15 (the long one is bench/load.py, by hand).

40 REST clients and 10 WebSocket clients for 10 s against a real daphne with the default
settings, on this run's database: no 5xx, no failed request, and never more PostgreSQL
connections held by the web process than SQUIRREL_DB_POOL_MAX_SIZE. Before the pool, each
request's thread kept a connection of its own (CONN_MAX_AGE=60) until the garbage collector
freed it: this test then saw 98 of the server's 100 connections held and 174 answers 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from bench.load import Call, Sampler, rest_text, run_clients, ws_text
from pvs.models import PV
from tests.e2e.stack import Proc, figure
from tests.load.conftest import daphne, publish
from tests.processes import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REST_CLIENTS = 40
WS_CLIENTS = 10
SECONDS = 10.0
DEVICES = 300
NAMES = [f"LOAD:DEV{i}:{kind}" for i in range(DEVICES) for kind in ("SP", "RB")]


@pytest.fixture
def web() -> Iterator[tuple[Proc, int]]:
    """daphne with the default settings, and a catalog of 300 PVs for it to page through."""
    PV.objects.bulk_create(
        [
            PV(setpoint_address=f"LOAD:DEV{i}:SP", readback_address=f"LOAD:DEV{i}:RB",
               device=f"LOAD:DEV{i}")
            for i in range(DEVICES)
        ]
    )  # fmt: skip
    with daphne() as running:
        yield running


def test_connections_stay_bounded_and_no_request_fails(web, redis_client, monitor_heartbeat):
    proc, port = web
    bound = settings.DB_POOL_MAX_SIZE
    names = NAMES
    publish(redis_client, dict.fromkeys(names, 0.0))
    stop = threading.Event()

    def monitor_flushes() -> None:  # a tenth of the values changes every 100 ms
        tick = 0
        while not stop.wait(0.1):
            tick += 1
            publish(redis_client, {n: float(tick) for n in names[tick % 10 :: 10]})

    flusher = threading.Thread(target=monitor_flushes, daemon=True)
    flusher.start()
    mix = [
        Call(30, "GET", "/v1/pvs/paged?pvName=&pageSize=100", follow=True),
        Call(15, "GET", "/v1/snapshots"),
        Call(10, "GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"),  # a 404 by the DB
        Call(15, "GET", "/v1/health/heartbeat"),
        Call(5, "GET", "/health"),
        Call(10, "GET", "/v1/tags"),
        Call(15, "POST", "/v1/pvs/live", {"pv_names": names[:100]}),
    ]
    subscriptions = [names[i * 50 : i * 50 + 50] for i in range(WS_CLIENTS)]
    sampler = Sampler(database_url(), proc.pid).start()
    try:
        rest, ws = run_clients(host="127.0.0.1", port=port, mix=mix, rest=REST_CLIENTS,
                               subscriptions=subscriptions, seconds=SECONDS)  # fmt: skip
    finally:
        stop.set()
        flusher.join(5)
        sampler.stop()
    time.sleep(1.0)
    held_after, _ = sampler.now()
    figure(
        f"load {REST_CLIENTS} REST + {WS_CLIENTS} WebSocket clients, {SECONDS:.0f} s: "
        f"{rest_text(rest)}; WebSocket {ws_text(ws)}; web process held at most "
        f"{sampler.web_max} PostgreSQL connections (bound {bound}), {held_after} after"
    )

    assert rest.requests > 100, rest
    assert not rest.server_errors, (rest.server_errors, rest.samples, proc.tail())
    assert not rest.failures, (rest.failures, rest.samples)
    assert set(rest.statuses) <= {200, 404}, rest.statuses
    assert ws.subscribed == WS_CLIENTS and not ws.failures, (ws, ws.samples)
    assert ws.types["diff"] >= WS_CLIENTS * SECONDS, ws.types  # the fan-out kept flowing
    # measured at all (the application_name matched), and within the pool's bound
    assert sampler.samples > 20 and sampler.web_max > 0, (sampler.samples, sampler.web_max)
    assert sampler.web_max <= bound, f"web process held {sampler.web_max} > {bound} connections"
    assert held_after <= bound

"""An unchanged enum PV compares equal, saved against live, as the React frontend compares them.

Real processes: the simulated IOC (binary ``bo`` and multi-bit ``mbbo`` setpoints) and
``manage.py monitor`` filling the cache. A snapshot is captured from that cache; then the saved
``value`` of each enum setpoint must equal (``==``, same type) its live ``value`` from
``POST /v1/pvs/live``, ``/v1/pvs/live/all`` and the WebSocket's ``initial`` message: the index on
every side, with the label beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from live.fanout import fanout
from monitor import events
from snapshots.capture import snapshot_capture
from squirrel.asgi import application
from tests.capture.conftest import Proc, processes, sim_catalog, worker_env  # noqa: F401
from tests.conftest import payload

pytestmark = [pytest.mark.e2e, pytest.mark.epics, pytest.mark.django_db(transaction=True)]

COUNT = 24  # devices 1 (binary), 2 (multi), 21 (binary), 22 (multi) are enums
PREFIX = "EN"


@pytest.fixture
def enums(redis_client, processes, monkeypatch):  # noqa: F811 (the imported fixture)
    """Sim IOC + monitor + catalog; the enum devices, once the monitor has cached them."""
    devices, env, _ = sim_catalog(processes, monkeypatch, count=COUNT, prefix=PREFIX)
    monitor = Proc(["monitor"], worker_env(SQUIRREL_MONITOR_HEARTBEAT_INTERVAL="0.5", **env))
    processes.append(monitor)
    names = [d.setpoint for d in devices if d.setpoint] + [d.readback for d in devices]
    deadline = time.monotonic() + 60
    while not all(redis_client.hmget(events.values_hash(), names)):
        assert time.monotonic() < deadline, "".join(monitor.lines[-30:])
        time.sleep(0.2)
    found = [d for d in devices if d.kind in ("binary", "multi")]
    assert len(found) == 4
    return found


async def _ws_initial(names: list[str]) -> dict[str, Any]:
    ws = WebsocketCommunicator(application, "/v1/ws/pvs")
    try:
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"type": "subscribe", "pvNames": names})
        message = await ws.receive_json_from(timeout=5)
        assert message["type"] == "initial"
        return message["data"]
    finally:
        await ws.disconnect()
        await fanout().stop()


def test_unchanged_enum_saved_value_equals_live_value(enums, api):
    snapshot = snapshot_capture(title="enums", description=None, use_cache=True, created_by=None)
    response = api.get(f"/v1/snapshots/{snapshot.pk}")  # streamed
    detail = json.loads(b"".join(response.streaming_content))["payload"]
    saved = {v["setpointName"]: v["setpointValue"] for v in detail["pvValues"]}
    names = [d.setpoint for d in enums]
    live = payload(api.post("/v1/pvs/live", {"pv_names": names}, format="json"))
    live_all = payload(api.get("/v1/pvs/live/all"))["values"]
    ws = asyncio.run(_ws_initial(names))
    for name in names:
        value = saved[name]["value"]
        assert type(value) is int and saved[name]["label"]  # the index, the label beside it
        for side in (live[name], live_all[name], ws[name]):
            assert side["value"] == value and type(side["value"]) is int, (name, side)
            assert side["label"] == saved[name]["label"]
            assert "index" not in side

"""WebSocket against real producers: the monitor (sim IOC) and the catalog for group subscribe."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from live.fanout import fanout
from pvs.models import PV
from squirrel.asgi import application
from tags.models import Tag, TagGroup
from tests.epics import epics_env, run_sim_ioc
from tests.processes import database_url

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture
async def hub():
    yield fanout()
    await fanout().stop()
    # The consumer's database_sync_to_async calls leave their thread's connection open; close it
    # so the test database can be dropped.
    await sync_to_async(connections.close_all)()


async def connect() -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/v1/ws/pvs")
    connected, _ = await ws.connect()
    assert connected
    return ws


async def next_message(
    ws: WebsocketCommunicator, *kinds: str, about: str | None = None, timeout: float = 5.0
) -> dict:
    """The next message of one of ``kinds`` (carrying ``about`` in its data, if given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not await ws.receive_nothing(timeout=0.01, interval=0.005):
            message = await ws.receive_json_from()
            if message["type"] in kinds and (about is None or about in message.get("data", {})):
                return message
    raise AssertionError(f"no {kinds} within {timeout} s")


async def test_value_from_a_real_monitor_arrives_as_a_diff_within_300_ms(hub):
    with run_sim_ioc(8, update_share=0.0) as ioc:
        target = ioc.setpoint(6)  # analog (monitor.sim.device_kind)
        await sync_to_async(PV.objects.create)(
            setpoint_address=target, readback_address=ioc.readback(6)
        )
        env = {**os.environ, **epics_env(ioc.port), "SQUIRREL_DATABASE_URL": database_url()}
        monitor = subprocess.Popen(
            [sys.executable, "manage.py", "monitor", "--max-seconds", "60"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ws = await connect()
            await ws.send_json_to({"type": "subscribe", "pvNames": [target]})
            # the monitor's first value: from the cache at once, or as a diff when it lands
            first = await next_message(ws, "initial", "diff", about=target, timeout=20)
            assert first["data"][target]["connected"] is True
            delays = []
            for step in range(3):
                value = 10.0 + step
                await sync_to_async(ioc.write)(target, value)
                written = time.monotonic()
                while True:
                    diff = await next_message(ws, "diff", about=target, timeout=5)
                    if diff["data"].get(target, {}).get("value") == value:
                        break
                delays.append(time.monotonic() - written)
            # put -> IOC -> monitor (flush every 100 ms) -> Redis -> fan-out (batch 100 ms)
            assert statistics.median(delays) < 0.3, delays
            await ws.disconnect()
        finally:
            monitor.terminate()
            monitor.wait(timeout=15)


async def test_subscribe_by_tag_and_by_snapshot(hub):
    from snapshots.models import Snapshot, SnapshotValue

    def seed():
        group = TagGroup.objects.create(name="Area")
        linac = Tag.objects.create(group=group, name="LINAC")
        tagged = PV.objects.create(setpoint_address="G:1:SP", readback_address="G:1:RBV")
        tagged.tags.add(linac)
        PV.objects.create(setpoint_address="G:2:SP")
        snapshot = Snapshot.objects.create(title="s", pv_count=1)
        SnapshotValue.objects.create(snapshot=snapshot, pv_name="G:2:SP", setpoint_address="G:2:SP")
        return str(linac.id), str(snapshot.id)

    tag_id, snapshot_id = await sync_to_async(seed)()
    ws = await connect()
    await ws.send_json_to({"type": "subscribe", "tagIds": [tag_id]})
    await ws.send_json_to({"type": "subscribe", "snapshotId": snapshot_id})
    await ws.send_json_to({"type": "subscribe", "tagIds": ["not-a-uuid"]})
    error = await next_message(ws, "error")
    assert "not a UUID" in error["message"]
    client = next(iter(fanout().clients.values()))
    assert client.wanted == {"G:1:SP", "G:1:RBV", "G:2:SP"}
    await ws.disconnect()

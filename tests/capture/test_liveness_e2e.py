"""The liveness rule end to end: a dead monitor's cached values are never saved or planned as live.

Real processes: the simulated IOC, ``manage.py monitor`` (one, or two shards), and this test as
the worker (capture and plan run in-process on the same Redis and database). A setpoint changed
on the IOC after a monitor died must reach the snapshot and the restore plan through a direct
read; the cache of a live shard is still used for the addresses it owns.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from monitor import bridge, cache, events, health, values
from pvs.models import PV
from snapshots.capture import snapshot_capture
from snapshots.models import PlanAction, RestorePlanItem, SnapshotValue, ValueSource
from snapshots.restore.plan import restore_plan_create
from snapshots.restore.selection import Selection
from tests.capture.conftest import Proc, sim_catalog, worker_env
from tests.conftest import payload

pytestmark = [pytest.mark.e2e, pytest.mark.epics, pytest.mark.django_db(transaction=True)]

COUNT = 60  # devices; analog ones are the setpoints this test changes
PREFIX = "LV"


def _wait(predicate, timeout: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            tail = "".join(proc.lines[-30:]) if proc is not None else ""
            raise AssertionError(f"not within {timeout} s: {what}\n{tail}")
        time.sleep(0.1)


@pytest.fixture
def machine(redis_client, processes, monkeypatch, settings):
    """Sim IOC + catalog; returns (analog devices, env for monitors)."""
    settings.MONITOR_ALIVE_SECONDS = 2.0  # a killed monitor is dead 2 s later
    settings.EPICS_TIMEOUT = 3.0
    devices, env, _ = sim_catalog(processes, monkeypatch, count=COUNT, prefix=PREFIX)
    analog = [d for d in devices if d.kind == "analog" and not d.changing]
    return analog, worker_env(SQUIRREL_MONITOR_HEARTBEAT_INTERVAL="0.5", **env)


def _monitor(processes, env, *args: str) -> Proc:
    proc = Proc(["monitor", *args], env)
    processes.append(proc)
    return proc


def _cached(redis_client, names: list[str]) -> bool:
    got = redis_client.hmget(events.values_hash(), names)
    return all(got)


def _kill(proc: Proc) -> None:
    proc.signal(signal.SIGKILL)
    proc.proc.wait(10)


def _cached_value(redis_client, name: str) -> float:
    return values.unpack(redis_client.hget(events.values_hash(), name))["value"]


def test_a_killed_monitor_is_not_trusted_by_the_next_snapshot(
    machine, processes, redis_client, api
):
    """Issue 15, item 2: the monitor killed (health unhealthy) and a setpoint changed on the
    IOC: the next default snapshot re-reads EVERY value directly and records none as live from
    the cache, so the changed setpoint is saved with its new value."""
    analog, env = machine
    target = analog[0].setpoint
    monitor = _monitor(processes, env)
    _wait(lambda: _cached(redis_client, [target]), 60, "cache filled", monitor)
    before = _cached_value(redis_client, target)
    _wait(lambda: cache.liveness_read().alive, 10, "monitor alive", monitor)
    assert health.summary_read()["status"] != "unhealthy"

    _kill(monitor)
    assert bridge.write({target: before + 40.0}, 5.0)[target].ok
    _wait(lambda: not cache.liveness_read().alive, 10, "heartbeat aged")
    assert health.summary_read()["status"] == "unhealthy"
    assert _cached_value(redis_client, target) == before  # the cache still holds the old one
    addresses = {
        a for pv in PV.objects.all() for a in (pv.setpoint_address, pv.readback_address) if a
    }
    assert _cached(redis_client, sorted(addresses))  # every value is there to be (mis)used

    snap = snapshot_capture(title="after kill", description=None, use_cache=True, created_by=None)
    row = SnapshotValue.objects.get(snapshot=snap, pv_name=target)
    assert row.sp_num == before + 40.0 and row.sp_source == ValueSource.DIRECT
    assert row.sp_age == 0.0 and row.sp_connected and row.sp_error is None
    # The cache is unusable as a whole: every value re-read, none live, none kept stale ...
    counts = (snap.live_count, snap.stale_count, snap.reread_count, snap.failed_count)
    assert counts == (0, 0, len(addresses), 0), counts
    rows = SnapshotValue.objects.filter(snapshot=snap)
    assert not rows.filter(sp_source=ValueSource.CACHE).exists()
    assert not rows.filter(rb_source=ValueSource.CACHE).exists()
    # ... and the API says so: the summary's counts, and the value's source and age.
    summary = next(s for s in payload(api.get("/v1/snapshots")) if s["id"] == str(snap.pk))
    assert (summary["liveCount"], summary["staleCount"]) == (0, 0), summary
    assert summary["rereadCount"] == len(addresses), summary
    response = api.get(f"/v1/snapshots/{snap.pk}")  # streamed
    assert response.status_code == 200
    body = json.loads(b"".join(response.streaming_content))["payload"]
    values_by_name = {v["pvName"]: v for v in body["pvValues"]}
    value = values_by_name[target]["setpointValue"]
    assert (value["value"], value["source"], value["age"]) == (before + 40.0, "direct", 0.0)


def test_a_dead_shard_is_read_directly_the_live_shard_from_cache(machine, processes, redis_client):
    analog, env = machine
    by_shard: dict[int, list[str]] = {0: [], 1: []}
    for device in analog:
        by_shard[cache.shard_of(device.setpoint, 2)].append(device.setpoint)
    live_sp, dead_sp = by_shard[0][0], by_shard[1][0]
    shard0 = _monitor(processes, env, "--shards", "2", "--shard", "0")
    shard1 = _monitor(processes, env, "--shards", "2", "--shard", "1")
    _wait(lambda: _cached(redis_client, [live_sp, dead_sp]), 60, "both shards cached", shard1)
    _wait(lambda: cache.liveness_read().alive, 10, "both shards alive", shard0)
    saved = snapshot_capture(title="saved", description=None, use_cache=True, created_by=None)
    saved_sp = {
        r.pv_name: r.sp_num
        for r in SnapshotValue.objects.filter(snapshot=saved, pv_name__in=[live_sp, dead_sp])
    }
    assert saved.reread_count == 0  # both shards alive: everything from the cache

    _kill(shard1)
    writes = {live_sp: saved_sp[live_sp] + 10.0, dead_sp: saved_sp[dead_sp] + 20.0}
    assert all(r.ok for r in bridge.write(writes, 5.0).values())
    _wait(lambda: cache.liveness_read().dead_shards == [1], 10, "shard 1 dead")
    # shard 0 follows its change; shard 1's cache still holds the saved value
    _wait(lambda: _cached_value(redis_client, live_sp) == writes[live_sp], 10, "shard 0 update")
    assert _cached_value(redis_client, dead_sp) == saved_sp[dead_sp]

    # The restore plan sees both changes: shard 0's from the cache, shard 1's read directly.
    plan = restore_plan_create(snapshot_id=saved.pk, selection=Selection(), created_by=None)
    actions = dict(
        RestorePlanItem.objects.filter(plan=plan, pv_name__in=[live_sp, dead_sp]).values_list(
            "pv_name", "action"
        )
    )
    assert actions == {live_sp: PlanAction.WRITE, dead_sp: PlanAction.WRITE}

    # A capture keeps shard 0's addresses from the cache and re-reads every one of shard 1's.
    snap = snapshot_capture(title="half", description=None, use_cache=True, created_by=None)
    rows = {
        r.pv_name: r
        for r in SnapshotValue.objects.filter(snapshot=snap, pv_name__in=[live_sp, dead_sp])
    }
    assert rows[live_sp].sp_num == writes[live_sp]
    assert rows[live_sp].sp_source == ValueSource.CACHE
    assert rows[dead_sp].sp_num == writes[dead_sp]
    assert rows[dead_sp].sp_source == ValueSource.DIRECT
    shard1_addresses = {
        a
        for pv in PV.objects.all()
        for a in (pv.setpoint_address, pv.readback_address)
        if a and cache.shard_of(a, 2) == 1
    }
    assert snap.reread_count == len(shard1_addresses)
    assert snap.live_count == saved.live_count - len(shard1_addresses)

"""End to end: the whole stack as real processes, driven only through daphne's HTTP API.

The simulated IOC (3,000 devices), the monitor, a Celery worker and daphne run as
subprocesses (tests.e2e.stack); the catalog is the IOC's CSV imported with ``import_pvs``.
The test takes a snapshot, changes values on the IOC, compares the snapshot with the live
values, restores it, and checks the IOC's values with independent Channel Access reads.
"""

from __future__ import annotations

import time

import pytest

from monitor import sim
from tests.e2e.stack import Stack, figure, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.epics]


def _shown(row: dict) -> object:
    """A saved setpoint as caproto's read shows it: the label of an enum, else the value."""
    side = row["setpointValue"]
    return side["label"] if side["label"] is not None else side["value"]


def _same(saved: object, live: object) -> bool:
    if isinstance(saved, float) or isinstance(live, float):
        return saved == pytest.approx(live)
    return saved == live


def test_snapshot_compare_restore_against_the_ioc(stack: Stack) -> None:
    api, ioc = stack.api, stack.ioc
    paged = api.get("/v1/pvs/paged?pvName=&pageSize=10").payload()
    assert paged["totalCount"] == stack.devices  # the imported catalog

    # 1. A snapshot through the API, from the monitor's cache.
    started = time.monotonic()
    job = stack.snapshot("e2e baseline")
    snapshot_seconds = time.monotonic() - started
    snap_id = job["resultId"]
    assert job["progress"] == 100 and job["message"] == (
        f"Snapshot created with {stack.devices} PV values"
    )
    summary = stack.snapshot_summary(snap_id)
    assert summary["pvCount"] == stack.devices
    assert summary["liveCount"] == len(stack.addresses)  # every value fresh from the cache
    assert (summary["staleCount"], summary["failedCount"]) == (0, 0)
    detail = api.get(f"/v1/snapshots/{snap_id}").payload()
    saved = {row["pvName"]: row for row in detail["pvValues"]}
    assert len(saved) == stack.devices

    # The saved values are the IOC's own, read directly over Channel Access.
    analog = stack.devices_of("analog", 12)
    sample = [
        *analog,
        *stack.devices_of("binary", 2),
        *stack.devices_of("multi", 2),
        *stack.devices_of("string", 2),
    ]
    for device in sample:
        name = device.setpoint
        assert name is not None
        assert _same(_shown(saved[name]), ioc.value(name)), (name, saved[name])
        assert saved[name]["readbackValue"] is not None
    for device in analog:
        assert saved[device.setpoint]["setpointValue"]["value"] == pytest.approx(
            sim.base_value(device.index)
        )

    # 2. Values change on the IOC (direct CA puts, as an operator's panel would).
    changes: dict[str, object] = {}
    for device in analog:
        changes[device.setpoint] = sim.base_value(device.index) + 12.5
    for device in stack.devices_of("binary", 2):
        changes[device.setpoint] = 1 - saved[device.setpoint]["setpointValue"]["value"]
    for device in stack.devices_of("multi", 2):
        changes[device.setpoint] = (saved[device.setpoint]["setpointValue"]["value"] + 1) % 4
    for device in stack.devices_of("string", 2):
        changes[device.setpoint] = f"changed-{device.index}"
    for name, value in changes.items():
        ioc.write(name, value)

    # 3. Compare with live: exactly the changed PVs differ, once the monitor has them.
    comparison: dict = {}

    def compared() -> bool:
        comparison.update(api.get(f"/v1/snapshots/{snap_id}/compare/live").payload())
        return comparison["differenceCount"] == len(changes)

    seen_after = wait_for(compared, 15, "compare/live shows the changes",
                          context=lambda: str(comparison)[:2000])  # fmt: skip
    assert {d["pvName"] for d in comparison["differences"]} == set(changes)
    assert comparison["matchCount"] + comparison["differenceCount"] == stack.devices
    assert comparison["snapshot2Id"] == "live"
    for device in analog:
        entry = next(d for d in comparison["differences"] if d["pvName"] == device.setpoint)
        assert entry["setpoint"]["value1"] == pytest.approx(sim.base_value(device.index))
        assert entry["setpoint"]["value2"] == pytest.approx(sim.base_value(device.index) + 12.5)
        assert entry["setpoint"]["withinTolerance"] is False

    # 4. Restore the snapshot (plan + verified writes in a worker job).
    started = time.monotonic()
    created = api.post(f"/v1/snapshots/{snap_id}/restore", {}).payload()
    job = stack.wait_job(created["jobId"], 120)
    restore_seconds = time.monotonic() - started
    assert job["status"] == "completed", (job, stack.tails())
    restore = api.get(f"/v1/restores/{created['restoreId']}").payload()
    assert restore["status"] == "completed", restore
    assert restore["counts"]["verified"] == len(changes), restore["counts"]
    assert restore["failureCount"] == 0, restore

    # 5. The IOC has the saved values again (independent CA reads, not our client).
    for name in changes:
        restored = ioc.value(name)
        assert _same(_shown(saved[name]), restored), (name, restored)
    for device in analog:  # readbacks followed their setpoints
        assert ioc.value(device.readback) == pytest.approx(sim.base_value(device.index), abs=0.05)

    # ... and the live comparison agrees once the monitor has seen the writes.
    wait_for(lambda: not compared() and comparison["differenceCount"] == 0, 15,
             "compare/live clean after the restore",
             context=lambda: str(comparison)[:2000])  # fmt: skip
    figure(
        f"e2e on {len(stack.addresses)} channels: snapshot {snapshot_seconds:.2f} s, "
        f"IOC change seen by compare/live {seen_after:.2f} s, "
        f"restore of {len(changes)} changed PVs {restore_seconds:.2f} s"
    )

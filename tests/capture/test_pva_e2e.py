"""pva:// end to end (issue 20) in a mixed catalog: the sim IOC serving CA and PVA, the monitor
as a subprocess filling the cache, capture from the cache and by direct read, compare, and a
verified restore; an unreachable pva:// name is marked and never hangs a capture or a restore.
Every check of the machine reads it with p4p's own client (``independent``), not our code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from p4p.client.thread import Context

from monitor import events, sim, values
from pvs.models import PV
from snapshots.capture import snapshot_capture
from snapshots.compare import CompareFilters, snapshot_compare
from snapshots.models import SnapshotValue, ValueKind, ValueSource
from tests.capture.conftest import Proc, worker_env
from tests.conftest import payload
from tests.epics import SimIOC, pva_port, run_sim_ioc

pytestmark = [pytest.mark.e2e, pytest.mark.epics, pytest.mark.django_db(transaction=True)]

COUNT = 24
DEAD = "pva://NOBODY:SERVES:THIS"


def pva(name: str) -> str:
    return "pva://" + name


@pytest.fixture
def machine(processes, redis_client, monkeypatch) -> Iterator[tuple[SimIOC, Context]]:
    """The IOC, a catalog (even devices and the string device 3 over PVA, the others over CA,
    the PVA table, one dead pva:// PV) and the monitor with every reachable value cached."""
    with run_sim_ioc(COUNT, update_share=0.0) as ioc:
        for key, value in ioc.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SQUIRREL_EPICS_TIMEOUT", "1.5")
        for d in sim.sim_devices(count=COUNT, prefix=ioc.prefix, update_share=0.0):
            scheme = "pva://" if d.index % 2 == 0 or d.index == 3 else ""
            PV.objects.create(
                setpoint_address=scheme + d.setpoint if d.setpoint else None,
                readback_address=scheme + d.readback,
                device=d.name,
                read_only=d.kind == "readonly",
                abs_tolerance=0.05 if d.kind == "analog" else 0.0,
            )
        PV.objects.create(setpoint_address=pva(sim.pva_table(ioc.prefix)), device="table")
        PV.objects.create(setpoint_address=DEAD, device="dead")
        monitor = Proc(["monitor"], worker_env(**ioc.env))
        processes.append(monitor)
        reachable = PV.objects.count() * 2  # enough: every address of the live PVs
        deadline = time.monotonic() + 30
        while redis_client.hlen(events.values_hash()) < min(reachable, 40):
            assert time.monotonic() < deadline, "".join(monitor.lines[-30:])
            time.sleep(0.2)
        time.sleep(1.0)
        conf = {
            "EPICS_PVA_ADDR_LIST": "127.0.0.1",
            "EPICS_PVA_AUTO_ADDR_LIST": "NO",
            "EPICS_PVA_BROADCAST_PORT": str(pva_port(ioc.port)),
        }
        with Context("pva", conf=conf, useenv=False, nt=False) as independent:
            yield ioc, independent


def _rows(snapshot) -> dict[str, SnapshotValue]:
    return {r.pv_name: r for r in SnapshotValue.objects.filter(snapshot=snapshot)}


@pytest.mark.parametrize("use_cache", [True, False])
def test_capture_saves_pva_values_and_marks_the_dead_one(machine, use_cache):
    ioc, independent = machine
    started = time.monotonic()
    snap = snapshot_capture(title="pva", description=None, use_cache=use_cache, created_by=None)
    took = time.monotonic() - started
    assert took < 10.0
    rows = _rows(snap)
    analog = rows[pva(ioc.setpoint(0))]
    assert analog.sp_kind == ValueKind.FLOAT
    assert analog.sp_num == independent.get(ioc.setpoint(0))["value"] == sim.base_value(0)
    assert analog.sp_meta.units == sim.UNITS[0]
    source = ValueSource.CACHE if use_cache else ValueSource.DIRECT
    assert analog.sp_source == source
    multi = rows[pva(ioc.setpoint(2))]
    truth = independent.get(ioc.setpoint(2))
    assert (multi.sp_kind, multi.sp_num) == (ValueKind.ENUM, float(truth["value.index"]))
    assert multi.sp_text == sim.MULTI_LABELS[truth["value.index"]]
    assert rows[ioc.setpoint(1)].sp_kind == ValueKind.ENUM  # CA beside PVA
    table = rows[pva(sim.pva_table(ioc.prefix))]
    assert table.sp_kind == ValueKind.TABLE
    dead = rows[DEAD]
    assert dead.sp_kind == ValueKind.NONE and dead.sp_error and dead.sp_connected is False


@pytest.fixture
def restore_client(db):
    """A key with the restore scope (issue 18) besides read and write."""
    from rest_framework.test import APIClient

    from tests.conftest import make_key

    _, token = make_key("restorer", read=True, write=True, restore=True)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def test_compare_and_a_verified_restore_over_pva(machine, restore_client):
    ioc, independent = machine
    saved = snapshot_capture(title="saved", description=None, use_cache=False, created_by=None)
    analog, multi, string = ioc.setpoint(0), ioc.setpoint(2), ioc.setpoint(3)
    table = sim.pva_table(ioc.prefix)
    # The machine moves (written with p4p, not our code).
    independent.put(analog, {"value": 33.0}, wait=True)
    independent.put(multi, {"value.index": 0}, wait=True)
    independent.put(table, {"value.k": [9.0, -2.25, 3.0]}, wait=True)
    assert sim.device_kind(3) == "string"
    independent.put(string, {"value": "moved"}, wait=True)
    moved = snapshot_capture(title="moved", description=None, use_cache=False, created_by=None)

    diff = snapshot_compare(
        snapshot1_id=str(saved.pk), snapshot2_id=str(moved.pk), filters=CompareFilters()
    ).to_wire()
    by_name = {d["pvName"]: d for d in diff["differences"]}
    assert by_name[pva(analog)]["setpoint"]["value2"] == 33.0
    assert by_name[pva(multi)]["setpoint"]["value2"] == 0
    assert by_name[pva(table)]["setpoint"]["differingCells"] == 1
    assert pva(ioc.setpoint(4 * 4)) not in by_name  # unchanged

    # A saved value for the unreachable PV: the restore must try it and still finish in time.
    SnapshotValue.objects.filter(snapshot=saved, pv_name=DEAD).update(
        sp_kind=ValueKind.FLOAT, sp_num=1.0, sp_error=None, sp_connected=True
    )
    started = time.monotonic()
    body = payload(
        restore_client.post(f"/v1/snapshots/{saved.pk}/restore?async=false", {}, format="json")
    )
    assert time.monotonic() - started < 20.0
    counts = body["counts"]
    failures = {f["pvName"]: f for f in body["failures"]}
    assert set(failures) == {DEAD}, body  # the unreachable one, marked; the rest verified
    assert counts["verified"] >= 4
    assert independent.get(analog)["value"] == sim.base_value(0)
    assert independent.get(multi)["value.index"] == 2
    assert independent.get(string)["value"] == "mode-3"
    assert independent.get(table)["value.k"].tolist() == list(sim.TABLE_K)


def test_other_structures_are_stored_as_json_and_never_restored(machine):
    from snapshots.restore.plan import plan_rows_saved
    from snapshots.restore.selection import Selection
    from tests.restore.conftest import snapshot_make

    ioc, _ = machine
    pv = PV.objects.get(setpoint_address=pva(sim.pva_table(ioc.prefix)))
    snap = snapshot_make([(pv, 1.0)])
    SnapshotValue.objects.filter(snapshot=snap).update(
        sp_kind=ValueKind.STRUCT, sp_num=None, sp_text='{"x": 1}'
    )
    rows, candidates = plan_rows_saved(snapshot=snap, selection=Selection())
    assert candidates == [] and rows[0].note == values.NOT_RESTORABLE


def test_a_stored_table_is_served_and_exported_as_json(read_client):
    import json

    from tests.restore.conftest import snapshot_make

    pv = PV.objects.create(setpoint_address="pva://T:TABLE", device="t")
    snap = snapshot_make([(pv, 1.0)])
    table = values.table_value(
        labels=["name", "k"], columns={"name": ["Q1"], "k": [1.5]}, types={"name": "string"}
    )
    SnapshotValue.objects.filter(snapshot=snap).update(
        sp_kind=ValueKind.TABLE, sp_num=None, sp_text=json.dumps(table)
    )
    body = json.loads(b"".join(read_client.get(f"/v1/snapshots/{snap.pk}").streaming_content))
    (row,) = body["payload"]["pvValues"]
    assert row["setpointValue"]["value"] == table
    export = read_client.get(f"/v1/snapshots/{snap.pk}/export?format=csv")
    assert export.status_code == 200

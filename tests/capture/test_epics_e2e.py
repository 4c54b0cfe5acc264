"""End to end with the simulated IOC, the monitor and a real worker (all subprocesses).

create -> job completes -> every PV saved with what the IOC serves (checked independently by
reading the IOC directly); stale and disconnected cache entries are re-read; an IOC that stops
answering mid-capture gives a completed snapshot with those values marked failed.
"""

from __future__ import annotations

import signal
import time

import pytest

from jobs.models import Job
from monitor import bridge, events, sim, values
from snapshots import services
from snapshots.models import Snapshot, SnapshotValue, ValueKind, ValueSource
from tests.capture.conftest import Proc, Worker, sim_catalog, worker_env
from tests.capture.test_worker_e2e import wait_job
from tests.epics import sigstop

pytestmark = [pytest.mark.e2e, pytest.mark.epics, pytest.mark.django_db(transaction=True)]

COUNT = 1000  # devices: analog, enum, string, read-only, one waveform (index 999)
PREFIX = "E5"


@pytest.fixture
def machine(redis_client, processes, workers, monkeypatch):
    """Sim IOC + catalog + monitor (cache filled) + one worker; returns (devices, ioc)."""
    devices, env, ioc = sim_catalog(processes, monkeypatch, count=COUNT, prefix=PREFIX)
    channels = sum(d.channels for d in devices)
    monitor = Proc(["monitor"], worker_env(**env))
    processes.append(monitor)
    deadline = time.monotonic() + 60
    # Every value cached and connected (never-connected channels are cached too).
    while (
        redis_client.hlen(events.values_hash()) < channels
        or redis_client.scard(events.disconnected_set()) > 0
    ):
        assert time.monotonic() < deadline, "".join(monitor.lines[-30:])
        time.sleep(0.2)
    workers.append(Worker(worker_env(SQUIRREL_EPICS_TIMEOUT="2", **env)).start())
    return devices, ioc


def _capture(*, use_cache: bool, timeout: float = 60) -> tuple[Job, Snapshot]:
    job = services.snapshot_create_enqueue(
        title="epics", description=None, use_cache=use_cache, created_by=None
    )
    job = wait_job(str(job.pk), timeout=timeout)
    assert job.status == Job.Status.COMPLETED, job.error
    return job, Snapshot.objects.get(pk=job.result_id)


def _side_value(row: SnapshotValue, side: str):
    kind = getattr(row, f"{side}_kind")
    if kind in (ValueKind.FLOAT, ValueKind.INT):
        return getattr(row, f"{side}_num")
    if kind == ValueKind.ENUM:
        return getattr(row, f"{side}_text")  # the label, as the client's entry value
    if kind == ValueKind.STRING:
        return getattr(row, f"{side}_text")
    if kind in (ValueKind.FLOAT_ARRAY, ValueKind.INT_ARRAY):
        return getattr(row, f"{side}_array")
    return None


def test_capture_matches_the_ioc(machine, redis_client):
    devices, _ = machine
    job, snap = _capture(use_cache=True)
    channels = sum(d.channels for d in devices)
    assert snap.pv_count == COUNT
    assert snap.live_count == channels and snap.failed_count == 0
    assert job.message == f"Snapshot created with {COUNT} PV values"
    rows = {r.pv_name: r for r in SnapshotValue.objects.filter(snapshot=snap)}
    assert len(rows) == COUNT
    # Independently: read the IOC directly and compare what does not change by itself.
    steady = [d for d in devices if not d.changing]
    names = [a for d in steady for a in (d.setpoint, d.readback) if a]
    direct = bridge.read(names, 5.0)
    checked = 0
    for d in steady:
        row = rows[d.setpoint or d.readback]
        for side, address in (("sp", d.setpoint), ("rb", d.readback)):
            if address is None:
                assert getattr(row, f"{side}_kind") is None
                continue
            live = direct[address]
            assert live.get("connected"), (address, live)
            saved = _side_value(row, side)
            if isinstance(saved, float) and d.kind == "analog" and side == "rb":
                assert saved == pytest.approx(live["value"], abs=sim.NOISE)
            elif isinstance(saved, list):
                assert saved == pytest.approx(live["value"])
            else:
                assert saved == live["value"], (address, saved, live)
            checked += 1
    assert checked > 1000
    enum = rows[f"{PREFIX}:DEV1:SP"]
    assert (enum.sp_kind, enum.sp_num, enum.sp_text) == (ValueKind.ENUM, 1.0, "ON")
    multi = rows[f"{PREFIX}:DEV2:SP"]
    assert (multi.sp_num, multi.sp_text) == (2.0, sim.MULTI_LABELS[2])
    wave = rows[f"{PREFIX}:DEV999:SP"]
    assert wave.sp_kind == ValueKind.FLOAT_ARRAY and len(wave.sp_array) == sim.WAVEFORM_LENGTH
    analog = rows[f"{PREFIX}:DEV0:SP"]
    assert analog.sp_num == sim.base_value(0) and analog.sp_meta.units == sim.UNITS[0]
    assert analog.sp_severity == 0 and analog.sp_ts is not None


def test_stale_and_disconnected_entries_are_reread(machine, redis_client):
    devices, _ = machine
    analog = [d for d in devices if d.kind == "analog" and not d.changing][:5]
    bad: dict[str, values.Entry] = {}
    for i, d in enumerate(analog):
        # Wrong values that only a direct read corrects: disconnected, or with an error.
        entry: values.Entry = {"value": -999.0, "connected": i % 2 == 0, "updated_at": time.time()}
        if i % 2 == 0:
            entry["error"] = values.DISCONNECTED
        bad[d.setpoint] = entry
    redis_client.hset(events.values_hash(), mapping={k: values.pack(v) for k, v in bad.items()})
    _, snap = _capture(use_cache=True)
    assert snap.reread_count == len(bad)
    assert snap.failed_count == 0 and snap.stale_count == 0
    rows = {r.pv_name: r for r in SnapshotValue.objects.filter(snapshot=snap)}
    for d in analog:
        row = rows[d.setpoint]
        assert row.sp_num == sim.base_value(d.index)
        assert row.sp_source == ValueSource.DIRECT and row.sp_error is None


def test_ioc_stopped_mid_capture_marks_values_failed(machine):
    devices, ioc = machine
    channels = sum(d.channels for d in devices)
    sigstop(ioc.proc.pid)  # the IOC stops answering; its TCP connections stay open
    try:
        started = time.monotonic()
        job, snap = _capture(use_cache=False, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        ioc.signal(signal.SIGCONT)
    assert snap.pv_count == COUNT
    assert snap.failed_count == channels and snap.reread_count == 0
    row = SnapshotValue.objects.filter(snapshot=snap, sp_kind__isnull=False).first()
    assert row.sp_error and row.sp_connected is False
    # Bounded by the per-PV timeout (2 s in this worker), not by the number of PVs.
    assert elapsed < 60, elapsed

"""The simulated IOC: generated devices, the CSV catalog, and the served PVs over real CA."""

from __future__ import annotations

import csv
import io
import os
import socket
import time

import pytest
from caproto import ChannelType
from caproto.sync import client as ca
from django.core.management import CommandError, call_command

from monitor import sim
from tests.epics import epics_environ, free_port, run_sim_ioc, sim_ioc  # noqa: F401


def _read(name: str, **kw):
    return ca.read(name, timeout=3, repeater=False, **kw)


def _write(name: str, value) -> None:
    ca.write(name, value, notify=True, timeout=3, repeater=False)


# Pure generation ------------------------------------------------------------------------------


def test_device_kinds_and_names():
    devices = sim.sim_devices(count=2000, prefix="X", update_share=0.1)
    kinds = [d.kind for d in devices]
    assert kinds[:6] == ["analog", "binary", "multi", "string", "readonly", "readonly"]
    assert kinds[999] == kinds[1999] == "waveform"
    assert kinds.count("waveform") == 2
    ro = devices[4]
    assert ro.setpoint is None and ro.readback == "X:DEV4:RBV" and ro.channels == 1
    assert devices[0].setpoint == "X:DEV0:SP" and devices[0].readback == "X:DEV0:RBV"
    assert sim.has_drive_limits(0) and not sim.has_drive_limits(6)


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3])
def test_update_share_is_a_share_of_channels(share):
    devices = sim.sim_devices(count=10_000, prefix="X", update_share=share)
    channels = sum(d.channels for d in devices)
    changing = [d for d in devices if d.changing]
    assert all(d.kind in ("analog", "readonly") for d in changing)
    assert abs(len(changing) - share * channels) <= 0.02 * channels


def test_update_share_is_capped_at_every_numeric_readback():
    devices = sim.sim_devices(count=1000, prefix="X", update_share=1.0)
    assert [d for d in devices if d.changing] == [
        d for d in devices if d.kind in ("analog", "readonly")
    ]


def test_generation_rejects_bad_arguments():
    with pytest.raises(ValueError):
        sim.sim_devices(count=-1, prefix="X")
    with pytest.raises(ValueError):
        sim.sim_devices(count=1, prefix="X", update_share=1.5)
    with pytest.raises(ValueError):
        sim.scan_for_rate(0)
    assert sim.scan_for_rate(1.0) == "1 second"
    assert sim.scan_for_rate(8.0) == ".1 second"
    assert sim.scan_for_rate(0.3) == "5 second"


def test_database_has_one_record_per_channel():
    devices = sim.sim_devices(count=1000, prefix="X", update_share=0.1)
    out = io.StringIO()
    records = sim.database_write(devices=devices, rate=1.0, out=out)
    text = out.getvalue()
    assert records == sum(d.channels for d in devices) == text.count("record(")
    changing = sum(d.changing for d in devices)
    assert text.count('field(SCAN, "1 second")') == changing
    assert text.count("field(DRVH,") == sum(sim.has_drive_limits(i) for i in range(1000))


def test_csv_catalog(tmp_path):
    path = tmp_path / "pvs.csv"
    call_command("sim_ioc", count=25, prefix="CSV", write_csv=path, csv_only=True)
    rows = list(csv.reader(path.open()))
    assert tuple(rows[0]) == sim.CSV_HEADER
    assert len(rows) == 26
    by_device = {row[3]: dict(zip(sim.CSV_HEADER, row, strict=True)) for row in rows[1:]}
    analog = by_device["CSV:DEV0"]
    assert analog["Setpoint"] == "CSV:DEV0:SP" and analog["Readback"] == "CSV:DEV0:RBV"
    assert analog["ReadOnly"] == "false" and float(analog["AbsTolerance"]) > 0
    readonly = by_device["CSV:DEV4"]
    assert readonly["Setpoint"] == "" and readonly["Readback"] == "CSV:DEV4:RBV"
    assert readonly["ReadOnly"] == "true"
    assert readonly["Area"] in sim.AREAS and readonly["Subsystem"] in sim.SUBSYSTEMS


def test_command_argument_errors(tmp_path):
    with pytest.raises(CommandError, match="--write-csv"):
        call_command("sim_ioc", count=1, csv_only=True)
    with pytest.raises(CommandError, match="update_share"):
        call_command(
            "sim_ioc", count=1, update_share=2, write_csv=tmp_path / "x.csv", csv_only=True
        )
    with pytest.raises(CommandError, match="prefix"):
        call_command("sim_ioc", count=1, prefix="A B", write_csv=tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


# Served over Channel Access -------------------------------------------------------------------


@pytest.mark.epics
def test_analog_setpoint_readback_and_metadata(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        sp = _read(sim_ioc.setpoint(7), data_type=ChannelType.CTRL_DOUBLE)
        assert sp.data[0] == pytest.approx(sim.base_value(7))
        assert sp.metadata.units == b"mm"  # UNITS[7 % 5]
        assert sp.metadata.precision == 3
        rbv = _read(sim_ioc.readback(7), data_type=ChannelType.CTRL_DOUBLE)
        assert rbv.data[0] == pytest.approx(sim.base_value(7), abs=sim.NOISE)
        assert rbv.metadata.units == b"mm"


@pytest.mark.epics
def test_put_propagates_to_readback(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        _write(sim_ioc.setpoint(6), 42.5)
        assert _read(sim_ioc.setpoint(6)).data[0] == 42.5
        assert _read(sim_ioc.readback(6)).data[0] == pytest.approx(42.5, abs=sim.NOISE)


@pytest.mark.epics
def test_drive_limits_clamp_puts(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        assert sim.has_drive_limits(0)
        _write(sim_ioc.setpoint(0), 1e6)
        assert _read(sim_ioc.setpoint(0)).data[0] == sim.DRIVE_LIMIT
        _write(sim_ioc.setpoint(0), -1e6)
        assert _read(sim_ioc.setpoint(0)).data[0] == -sim.DRIVE_LIMIT
        # No drive limits on device 6: the put is kept as is.
        _write(sim_ioc.setpoint(6), 1e6)
        assert _read(sim_ioc.setpoint(6)).data[0] == 1e6


@pytest.mark.epics
def test_enum_labels(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        binary = _read(sim_ioc.readback(1), data_type=ChannelType.CTRL_ENUM)
        assert [s.decode() for s in binary.metadata.enum_strings] == list(sim.BINARY_LABELS)
        assert binary.data[0] == 1
        multi = _read(sim_ioc.setpoint(2), data_type=ChannelType.CTRL_ENUM)
        assert [s.decode() for s in multi.metadata.enum_strings] == list(sim.MULTI_LABELS)
        assert multi.data[0] == 2
        _write(sim_ioc.setpoint(22), 3)
        assert _read(sim_ioc.readback(22), data_type=ChannelType.STRING).data == [b"MAINTENANCE"]


@pytest.mark.epics
def test_strings_follow(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        assert _read(sim_ioc.readback(3)).data == [b"mode-3"]
        _write(sim_ioc.setpoint(3), "beam on")
        assert _read(sim_ioc.readback(3)).data == [b"beam on"]


@pytest.mark.epics
def test_read_only_device_has_no_setpoint(sim_ioc):  # noqa: F811
    with epics_environ(sim_ioc.port):
        assert _read(sim_ioc.readback(4)).data[0] == pytest.approx(sim.base_value(4), abs=0.01)
        with pytest.raises(TimeoutError):
            ca.read(f"{sim_ioc.prefix}:DEV4:SP", timeout=0.5, repeater=False)


@pytest.mark.epics
def test_changing_readbacks_change(sim_ioc):  # noqa: F811
    changing = next(d for d in sim.sim_devices(count=50, prefix="X") if d.changing)
    with epics_environ(sim_ioc.port):
        first = _read(sim_ioc.readback(changing.index)).data[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if _read(sim_ioc.readback(changing.index)).data[0] != first:
                break
        else:
            pytest.fail("a changing readback did not change in 10 s")


@pytest.mark.epics
def test_waveforms_and_restart_on_same_port():
    with run_sim_ioc(1000, update_share=0.0) as ioc:
        assert ioc.channels == sum(d.channels for d in sim.sim_devices(count=1000, prefix="X"))
        with epics_environ(ioc.port):
            wave = _read(ioc.setpoint(999))
            assert len(wave.data) == sim.WAVEFORM_LENGTH
            assert list(_read(ioc.readback(999)).data) == list(wave.data)
            _write(ioc.setpoint(10), 7.0)
        pid = ioc.pid
        ioc.kill()
        assert not ioc.running
        ioc.restart()
        assert ioc.pid != pid and ioc.running
        with epics_environ(ioc.port):
            # A fresh IOC: the put before the crash is gone.
            assert _read(ioc.setpoint(10)).data[0] == sim.base_value(10)
        assert ioc.stop() == 0
        assert not ioc.running
    assert not _pid_alive(pid)


@pytest.mark.epics
def test_simioc_client_helpers(sim_ioc):  # noqa: F811
    sim_ioc.write(sim_ioc.setpoint(10), 3.25)
    assert sim_ioc.value(sim_ioc.setpoint(10)) == 3.25
    assert sim_ioc.value(sim_ioc.readback(3)) in ("mode-3", "beam on")
    sim_ioc.write(sim_ioc.setpoint(23), "x y")
    assert sim_ioc.value(sim_ioc.readback(23)) == "x y"
    assert isinstance(sim_ioc.value(sim_ioc.readback(10)), float)


@pytest.mark.epics
def test_port_in_use_is_refused():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(RuntimeError, match="already in use"), run_sim_ioc(5, port=port):
            pass


@pytest.mark.epics
def test_stop_is_clean_and_leaves_nothing():
    port = free_port()
    with run_sim_ioc(5, port=port) as ioc:
        pid = ioc.pid
        assert ioc.running
    assert not ioc.running and not _pid_alive(pid)
    assert ioc._process.returncode == 0


def _pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

"""pvAccess (issue 20) against the sim IOC over real pvAccess (its QSRV), every value checked with
p4p's own thread client configured by hand (``independent``), never through our code.

Reads through the bridge: values with metadata, enum index and label (an mbbo and the PVA-only
NTEnum), waveform, NTTable; writes verified independently; an unreachable name completes within
its timeout; the CA-then-PVA fallback for bare names; the monitor's cache with a disconnect
written within 5 s and values back after the IOC restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from p4p.client.thread import Context

from monitor import bridge, events, runner, sim, values
from monitor.pva_values import entry_of
from pvs.services import pv_create
from tests.epics import SimIOC, pva_port, run_sim_ioc
from tests.monitor.test_runner import _until

pytestmark = pytest.mark.epics

COUNT = 1000  # devices 0..999: analog, binary, multi, string, read-only; 999 is a waveform


@pytest.fixture(scope="module")
def pva_ioc() -> Iterator[SimIOC]:
    with run_sim_ioc(COUNT, update_share=0.0) as ioc:
        yield ioc


@pytest.fixture
def env(pva_ioc, monkeypatch) -> SimIOC:
    """This process's EPICS environment pointed at the module's IOC (our clients read it)."""
    for key, value in pva_ioc.env.items():
        monkeypatch.setenv(key, value)
    return pva_ioc


@pytest.fixture(scope="module")
def independent(pva_ioc) -> Iterator[Context]:
    """p4p's own client on the IOC's PVA port, configured here (not from our environment)."""
    port = str(pva_port(pva_ioc.port))
    conf = {
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_BROADCAST_PORT": port,
    }
    ctx = Context("pva", conf=conf, useenv=False, nt=False)
    yield ctx
    ctx.close()


def pva(name: str) -> str:
    return "pva://" + name


def test_reads_match_the_ioc_with_metadata(env, independent):
    ioc = env
    names = {
        "analog": ioc.setpoint(0),
        "binary": ioc.setpoint(1),
        "multi": ioc.setpoint(2),
        "string": ioc.setpoint(3),
        "wave": ioc.setpoint(999),
        "table": sim.pva_table(ioc.prefix),
        "mode": sim.pva_mode(ioc.prefix),
    }
    got = bridge.read([pva(n) for n in names.values()], 5.0)
    truth = {key: independent.get(name, timeout=5.0) for key, name in names.items()}

    analog = got[pva(names["analog"])]
    assert analog["connected"] is True and not analog.get("error")
    assert analog["value"] == truth["analog"]["value"] == sim.base_value(0)
    assert analog["units"] == truth["analog"]["display.units"] == sim.UNITS[0]
    assert analog["precision"] == truth["analog"]["display.precision"] == 3
    assert analog["severity"] == truth["analog"]["alarm.severity"] == 0
    assert analog["status"] == 0
    stamp = truth["analog"]["timeStamp.secondsPastEpoch"]
    assert analog["timestamp"] == pytest.approx(stamp, abs=1.0)

    for key, labels in (("binary", sim.BINARY_LABELS), ("multi", sim.MULTI_LABELS)):
        entry = got[pva(names[key])]
        index = truth[key]["value.index"]
        assert entry["index"] == index and entry["value"] == labels[index]
        assert entry["enum_strs"] == list(truth[key]["value.choices"]) == list(labels)
        assert values.to_wire(entry)["value"] == index  # on the wire exactly as a CA enum
        assert values.to_wire(entry)["label"] == labels[index]

    assert got[pva(names["string"])]["value"] == truth["string"]["value"] == "mode-3"
    wave = got[pva(names["wave"])]["value"]
    assert len(wave) == sim.WAVEFORM_LENGTH
    assert wave == pytest.approx(truth["wave"]["value"].tolist())

    table = got[pva(names["table"])]
    assert table["structure"] == values.TABLE
    assert table["value"]["labels"] == list(truth["table"]["labels"]) == ["name", "k"]
    assert table["value"]["columns"] == {
        "name": list(truth["table"]["value.name"]),
        "k": truth["table"]["value.k"].tolist(),
    }
    assert table["value"]["types"] == {"name": "string", "k": "float64"}

    mode = got[pva(names["mode"])]
    assert mode["index"] == truth["mode"]["value.index"] == 2
    assert mode["value"] == sim.MODE_LABELS[2] and mode["enum_strs"] == list(sim.MODE_LABELS)


def test_writes_are_verified_by_the_binding(env, independent):
    ioc = env
    analog, binary, multi, string = (ioc.setpoint(i) for i in (4 * 20, 1, 2, 3))
    wave = ioc.setpoint(999)
    table, mode = sim.pva_table(ioc.prefix), sim.pva_mode(ioc.prefix)
    new_table = {"columns": {"name": ["A", "B", "C"], "k": [0.5, 0.25, -1.0]}}
    results = bridge.write(
        {
            pva(analog): 12.5,
            pva(binary): "OFF",
            pva(multi): 3,
            pva(string): "pva-mode",
            pva(wave): [1.0, 2.0, 3.0],
            pva(mode): "REMOTE",
            pva(table): new_table,
        },
        5.0,
    )
    assert all(r.ok for r in results.values()), results
    assert independent.get(analog)["value"] == 12.5
    assert independent.get(binary)["value.index"] == 0
    assert independent.get(multi)["value.index"] == 3
    assert independent.get(string)["value"] == "pva-mode"
    assert independent.get(wave)["value"].tolist() == [1.0, 2.0, 3.0]
    assert independent.get(mode)["value.index"] == 1
    got = independent.get(table)
    assert list(got["value.name"]) == ["A", "B", "C"] and got["value.k"].tolist() == [0.5, 0.25, -1]

    refused = bridge.write({pva(multi): "NOT-A-STATE", pva(analog): "x"}, 5.0)
    assert not refused[pva(multi)].ok and "is not one of" in (refused[pva(multi)].error or "")
    assert not refused[pva(analog)].ok and not refused[pva(analog)].unknown
    assert independent.get(multi)["value.index"] == 3  # untouched


def test_an_unreachable_name_never_hangs_a_read_or_a_write(env):
    ioc = env
    dead = pva(f"{ioc.prefix}:NOBODY:SERVES:THIS")
    started = time.monotonic()
    got = bridge.read([dead, pva(ioc.setpoint(0))], 1.0)
    written = bridge.write({dead: 1.0, pva(ioc.setpoint(8 * 20)): 2.0}, 1.0)
    took = time.monotonic() - started
    assert took < 4.0
    assert got[dead]["connected"] is False and got[dead]["value"] is None and got[dead]["error"]
    assert got[pva(ioc.setpoint(0))]["connected"] is True
    assert not written[dead].ok and written[dead].timed_out and not written[dead].unknown
    assert written[pva(ioc.setpoint(8 * 20))].ok


def test_bare_names_fall_back_to_pva_only_when_enabled(env, independent, settings):
    ioc = env
    table, mode = sim.pva_table(ioc.prefix), sim.pva_mode(ioc.prefix)  # served over PVA only
    settings.EPICS_UNPREFIXED_PVA_FALLBACK = False
    off = bridge.read([table, ioc.setpoint(0)], 1.0)
    assert off[table]["connected"] is False and off[ioc.setpoint(0)]["connected"] is True
    assert not bridge.write({mode: "LOCAL"}, 1.0)[mode].ok

    settings.EPICS_UNPREFIXED_PVA_FALLBACK = True
    on = bridge.read([table, mode, ioc.setpoint(0)], 1.0)
    assert on[table]["connected"] is True and on[table]["structure"] == values.TABLE
    assert on[mode]["value"] == independent.get(mode)["value.choices"][on[mode]["index"]]
    assert on[ioc.setpoint(0)]["connected"] is True  # served by CA: not tried over PVA
    assert bridge.write({mode: "LOCAL"}, 2.0)[mode].ok
    assert independent.get(mode)["value.index"] == 0


def test_other_structures_are_json_and_nan_follows_the_ca_rule():
    from p4p import Type, Value

    odd = Value(
        Type([("value", ("S", None, [("x", "d"), ("tags", "as")])), ("record", "i")], id="my:T"),
        {"value": {"x": 1.5, "tags": ["a"]}},
    )
    entry = entry_of(odd, "struct", None, 1.0)
    assert entry["structure"] == values.STRUCT
    assert entry["value"] == {"value": {"x": 1.5, "tags": ["a"]}}
    nan = Value(Type([("value", "d")], id="epics:nt/NTScalar:1.0"), {"value": float("nan")})
    entry = entry_of(nan, "scalar", None, 1.0)
    assert entry["value"] is None and entry["error"] == values.NON_FINITE
    unsigned = Value(Type([("value", "L")], id="epics:nt/NTScalar:1.0"), {"value": 2**64 - 1})
    assert entry_of(unsigned, "scalar", None, 1.0)["value"] == 2**64 - 1


# --- the monitor ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_monitor_caches_pva_and_marks_a_dead_ioc_within_5_s(redis_client, monkeypatch, settings):
    settings.EPICS_UNPREFIXED_PVA_FALLBACK = True
    with run_sim_ioc(40, update_share=0.0) as ioc:
        for key, value in ioc.env.items():
            monkeypatch.setenv(key, value)
        analog, multi, rb = pva(ioc.setpoint(0)), pva(ioc.setpoint(2)), pva(ioc.readback(0))
        table = pva(sim.pva_table(ioc.prefix))
        pv_create(setpoint_address=analog, readback_address=rb)
        pv_create(setpoint_address=multi)
        pv_create(setpoint_address=table)
        pv_create(setpoint_address=ioc.setpoint(6))  # CA beside PVA in one catalog
        bare_mode = sim.pva_mode(ioc.prefix)  # a bare name only PVA serves: the fallback
        pv_create(setpoint_address=bare_mode)

        def entry(name):
            data = redis_client.hget(events.values_hash(), name)
            return values.unpack(data) if data else None

        async def scenario():
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop=stop, max_seconds=60))
            names = (analog, multi, rb, table, ioc.setpoint(6), bare_mode)
            await _until(lambda: all((entry(n) or {}).get("connected") for n in names), 15.0)
            cached = {n: entry(n) for n in names}
            ioc.kill()
            lost = await _until(lambda: entry(analog)["connected"] is False, 5.0)
            after_kill = entry(analog)
            ioc.start()
            back = await _until(lambda: entry(analog)["connected"] is True, 15.0)
            stop.set()
            await task
            return cached, lost, after_kill, back

        cached, lost, after_kill, back = asyncio.run(scenario())
    print(f"PVA disconnect written after {lost:.2f} s; back {back:.2f} s after the restart")
    assert cached[analog]["value"] == sim.base_value(0) and cached[analog]["units"] == sim.UNITS[0]
    assert cached[multi]["index"] == 2 and cached[multi]["value"] == sim.MULTI_LABELS[2]
    assert cached[table]["structure"] == values.TABLE
    assert cached[ioc.setpoint(6)]["value"] == sim.base_value(6)
    assert cached[bare_mode]["index"] == 2 and cached[bare_mode]["value"] == sim.MODE_LABELS[2]
    assert after_kill["error"] == values.DISCONNECTED
    assert after_kill["value"] == cached[analog]["value"]


@pytest.mark.django_db
def test_csv_with_a_pva_share_imports_and_exports_all_three_address_forms(tmp_path):
    from django.core.management import call_command

    from pvs.models import PV

    path = tmp_path / "pvs.csv"
    call_command("sim_ioc", count=40, prefix="CSV", write_csv=path, csv_only=True, pva_share=0.5)
    text = path.read_text()
    pva_rows = [i for i in range(40) if sim.is_pva(i, 0.5)]
    assert 5 < len(pva_rows) < 35
    assert f"pva://CSV:DEV{pva_rows[0]}:RBV" in text
    call_command("import_pvs", str(path))
    pv_create(setpoint_address="ca://CSV:EXTRA:SP")
    addresses = set(PV.objects.values_list("readback_address", flat=True))
    assert {f"pva://CSV:DEV{i}:RBV" for i in pva_rows} <= addresses
    assert "CSV:DEV1:RBV" in addresses or "pva://CSV:DEV1:RBV" in addresses
    out = tmp_path / "out.csv"
    call_command("export_pvs", str(out))
    exported = out.read_text()
    assert f"pva://CSV:DEV{pva_rows[0]}:SP" in exported or sim.device_kind(pva_rows[0]) in (
        "readonly",
    )
    assert "ca://CSV:EXTRA:SP" in exported
    with pytest.raises(Exception, match="pva-share"):
        call_command("sim_ioc", count=1, pva_share=2, write_csv=path, csv_only=True)


def test_subscriptions_are_paced_limited_and_resubscribed(env, monkeypatch):
    from monitor import pva as pva_client

    monkeypatch.setattr(pva_client, "PACE", 2)
    monkeypatch.setattr(pva_client, "SEARCH_LIMIT", 3)
    monkeypatch.setattr(pva_client, "RESUBSCRIBE_AFTER", 0.5)
    ioc = env
    dead = [pva(f"{ioc.prefix}:GONE{i}") for i in range(3)]
    live = [pva(ioc.setpoint(i * 20)) for i in range(3)]

    async def go():
        got: dict[str, values.Entry] = {}
        most = 0
        async with pva_client.PVAClient(on_update=lambda n, e: got.setdefault(n, e)) as client:
            client.subscribe(dead + live)  # the dead names take every search slot first
            started = time.monotonic()
            while not set(live) <= set(got) and time.monotonic() - started < 10:
                most = max(most, len(client.waiting))
                await asyncio.sleep(0.02)
            return got, most, client.resubscribes

    got, most, resubscribed = asyncio.run(go())
    assert set(got) == set(live)  # the live ones got their turn; nothing from the dead ones
    assert all(got[n]["connected"] for n in live)
    assert most <= 3  # never more searching than the limit
    assert resubscribed >= 3

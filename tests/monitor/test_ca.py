"""monitor.ca and monitor.circuits against a real IOC (softioc's EPICS core) in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import msgpack
import pytest

from monitor import bridge, events, values
from monitor.ca import UNSUPPORTED_PVA, CAClient, wire_name
from monitor.circuits import CircuitBreakers, circuit_force, circuits_read, ioc_name
from squirrel.exceptions import Invalid
from tests.epics import SoftIoc, sigstop

pytestmark = pytest.mark.epics


@pytest.fixture
def ioc(tmp_path, monkeypatch) -> Iterator[SoftIoc]:
    server = SoftIoc(tmp_path, f"T{os.urandom(3).hex()}:")
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    server.start()
    yield server
    server.kill()


def run(coro):
    return asyncio.run(coro)


async def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# --- names and IOC names ---------------------------------------------------------------------


def test_wire_name_strips_ca_and_refuses_pva():
    assert wire_name("ca://A:B") == "A:B"
    assert wire_name("A:B") == "A:B"
    assert wire_name("pva://A:B") is None


@pytest.mark.parametrize(
    ("address", "ioc"),
    [("A:B:C", "A:B"), ("A:B:C:D", "A:B"), ("A:B", "A"), ("ABC", "default"), ("ca://X:Y:Z", "X:Y")],
)
def test_ioc_name_rule(address, ioc):
    assert ioc_name(address) == ioc


# --- reads ----------------------------------------------------------------------------------


def test_read_many_gives_values_alarm_timestamp_and_metadata(ioc):
    async def go():
        async with CAClient() as client:
            return await client.read_many(
                [ioc.name("AO"), "ca://" + ioc.name("ENUM"), ioc.name("STR")], 3.0
            )

    before = time.time()
    got = run(go())
    ao = got[ioc.name("AO")]
    assert ao["value"] == 1.5 and ao["connected"] is True
    assert ao["status"] == 0 and ao["severity"] == 0
    assert before - 60 < ao["timestamp"] <= time.time()  # PINI'd at IOC start, UTC epoch
    assert ao["units"] == "mm" and ao["precision"] == 3
    assert ao["upper_ctrl_limit"] == 10.0 and ao["lower_ctrl_limit"] == -10.0
    assert "error" not in ao
    enum = got["ca://" + ioc.name("ENUM")]
    assert enum["value"] == "On" and enum["index"] == 1
    assert enum["enum_strs"] == ["Off", "On", "Fault"]
    assert got[ioc.name("STR")]["value"] == "hello"


def test_read_many_reports_failures_per_pv_without_raising(ioc):
    missing = ioc.name("MISSING")

    async def go():
        async with CAClient() as client:
            return await client.read_many([ioc.name("AO"), missing, "pva://X:Y"], 0.5)

    got = run(go())
    assert got[ioc.name("AO")]["connected"] is True
    assert got[missing]["connected"] is False and got[missing]["value"] is None
    assert "not connected" in got[missing]["error"]
    assert got["pva://X:Y"]["error"] == UNSUPPORTED_PVA


def test_never_connected_entry_never_raises_for_empty_input(ioc):
    async def go():
        async with CAClient() as client:
            return await client.read_many([], 0.2), await client.write_many({}, 0.2)

    assert run(go()) == ({}, {})


# --- writes ---------------------------------------------------------------------------------


def test_write_with_completion_then_read_back(ioc):
    names = {
        ioc.name("AO"): 2.25,
        ioc.name("STR"): "bye",
        ioc.name("ENUM"): "Fault",
    }

    async def go():
        async with CAClient() as client:
            results = await client.write_many(names, 3.0, wait=True)
            return results, await client.read_many(list(names) + [ioc.name("RB")], 3.0)

    results, got = run(go())
    assert all(r.ok and r.error is None and not r.timed_out for r in results.values()), results
    assert got[ioc.name("AO")]["value"] == 2.25
    assert got[ioc.name("RB")]["value"] == 2.25  # the readback record followed (CP link)
    assert got[ioc.name("STR")]["value"] == "bye"
    assert got[ioc.name("ENUM")]["value"] == "Fault" and got[ioc.name("ENUM")]["index"] == 2


def test_write_enum_by_index_and_without_completion(ioc):
    async def go():
        async with CAClient() as client:
            first = await client.write_many({ioc.name("ENUM"): 0}, 3.0, wait=True)
            after_index = await client.read_many([ioc.name("ENUM")], 3.0)
            second = await client.write_many({ioc.name("AO"): -3.5}, 3.0, wait=False)
            # Same circuit: the IOC handles the read after the put.
            after_put = await client.read_many([ioc.name("AO")], 3.0)
            return first, after_index, second, after_put

    first, after_index, second, after_put = run(go())
    assert first[ioc.name("ENUM")].ok
    assert after_index[ioc.name("ENUM")]["value"] == "Off"
    assert after_index[ioc.name("ENUM")]["index"] == 0
    assert second[ioc.name("AO")].ok
    assert after_put[ioc.name("AO")]["value"] == -3.5


def test_waveform_written_and_read_whole(ioc):
    data = [float(i) * 0.5 for i in range(1000)]

    async def go():
        async with CAClient() as client:
            result = await client.write_many({ioc.name("WF"): data}, 3.0)
            return result, await client.read_many([ioc.name("WF")], 3.0)

    result, got = run(go())
    assert result[ioc.name("WF")].ok
    assert got[ioc.name("WF")]["value"] == data


def test_enum_index_without_a_label_is_written_and_read_back(ioc):
    """An mbbo may hold a state that has no label (here 5 of ZR/ON/TW): a safety snapshot
    reads such a state, so a revert must be able to write it back."""

    async def go():
        async with CAClient() as client:
            put = await client.write_many({ioc.name("ENUM"): 5}, 3.0)
            held = await client.read_many([ioc.name("ENUM")], 3.0)
            refused = await client.write_many({ioc.name("ENUM"): 70000}, 3.0)
            back = await client.write_many({ioc.name("ENUM"): "On"}, 3.0)
            return put, held, refused, back

    put, held, refused, back = run(go())
    assert put[ioc.name("ENUM")].ok
    assert held[ioc.name("ENUM")]["index"] == 5
    assert held[ioc.name("ENUM")]["value"] == "5"
    assert not refused[ioc.name("ENUM")].ok
    assert "out of range" in refused[ioc.name("ENUM")].error
    assert back[ioc.name("ENUM")].ok


def test_bad_writes_fail_per_pv_and_write_nothing(ioc):
    async def go():
        async with CAClient() as client:
            results = await client.write_many(
                {
                    ioc.name("ENUM"): "NoSuchLabel",
                    ioc.name("STR"): "x" * 60,
                    ioc.name("AO"): "not a number",
                    ioc.name("MISSING"): 1.0,
                    "pva://A:B": 1,
                },
                0.5,
            )
            return results, await client.read_many([ioc.name("ENUM"), ioc.name("STR")], 3.0)

    results, got = run(go())
    assert not any(r.ok for r in results.values())
    assert "NoSuchLabel" in results[ioc.name("ENUM")].error
    assert "39 bytes" in results[ioc.name("STR")].error
    assert results[ioc.name("AO")].error.startswith("cannot write value")
    assert results[ioc.name("MISSING")].timed_out
    assert results["pva://A:B"].error == UNSUPPORTED_PVA
    assert got[ioc.name("ENUM")]["value"] == "On"
    assert got[ioc.name("STR")]["value"] == "hello"


def test_put_sent_then_ioc_killed_is_unknown_not_failed(ioc):
    """A put on the wire whose IOC dies before answering may have been applied: ``unknown``,
    never a plain failure; a put refused before sending stays a failure."""
    slow, enum = ioc.name("SLOW"), ioc.name("ENUM")

    async def go():
        async with CAClient() as client:
            assert await client.connect([slow, enum], 3.0) == {slow, enum}
            await client.read_many([slow, enum], 3.0)  # metadata in: the puts go out at once
            task = asyncio.ensure_future(
                client.write_many({slow: 5.0, enum: "NoSuchLabel"}, 20.0, wait=True)
            )
            await asyncio.sleep(0.5)  # SLOW's put is sent; its completion is 30 s away
            assert not task.done()
            ioc.kill()
            killed = time.monotonic()
            results = await task
            return results, time.monotonic() - killed

    results, waited = run(go())
    lost = results[slow]
    assert not lost.ok and lost.unknown and not lost.timed_out, lost
    assert "connection to the IOC was lost" in lost.error and "may have been" in lost.error
    assert waited < 5.0  # told by the dropped connection, not by the 20 s timeout
    refused = results[enum]
    assert not refused.ok and not refused.unknown and "NoSuchLabel" in refused.error
    # The bridge keeps the distinction for the restore.
    put = bridge._put_result(lost)
    assert (put.ok, put.unknown, put.error) == (False, True, lost.error)
    assert not bridge._put_result(refused).unknown


def test_put_sent_to_a_hung_ioc_is_unknown_and_was_applied(ioc):
    """An IOC that stops answering (SIGSTOP) after the put went out: no answer in time, so
    ``unknown`` -- and indeed the IOC applies the put once it runs again."""
    ao = ioc.name("AO")

    async def go():
        async with CAClient() as client:
            await client.read_many([ao], 3.0)
            sigstop(ioc.proc.pid)
            try:
                result = await client.write_many({ao: 7.25}, 1.0)
            finally:
                ioc.proc.send_signal(signal.SIGCONT)
            return result[ao], await client.read_many([ao], 5.0)

    hung, after = run(go())
    assert not hung.ok and hung.unknown and hung.timed_out, hung
    assert "did not answer in time" in hung.error
    assert after[ao]["value"] == 7.25  # it had been sent, and it was applied


def test_sync_helpers(ioc, redis_client):
    assert bridge.write({ioc.name("AO"): 4.0}, 3.0)[ioc.name("AO")].ok
    assert bridge.read([ioc.name("AO")], 3.0)[ioc.name("AO")]["value"] == 4.0


# --- subscriptions, disconnect, reconnect ---------------------------------------------------


def test_subscribe_streams_updates_then_disconnect_and_reconnect(ioc):
    updates: dict[str, list] = {}
    connections: list[tuple[str, bool, float]] = []
    cnt, wf = ioc.name("CNT"), ioc.name("WF")

    async def go():
        async with CAClient() as client:
            client.subscribe(
                [cnt, wf, ioc.name("ENUM")],
                lambda name, entry: updates.setdefault(name, []).append(entry),
                lambda name, ok: connections.append((name, ok, time.monotonic())),
            )
            assert await _wait_for(lambda: len(updates.get(cnt, [])) >= 3, 5.0)
            assert updates[ioc.name("ENUM")][0]["value"] == "On"
            await client.write_many({wf: [1.0, 2.0, 3.0]}, 3.0)
            assert await _wait_for(lambda: updates[wf][-1]["value"] == [1.0, 2.0, 3.0], 3.0)

            killed = time.monotonic()
            ioc.kill()
            assert await _wait_for(lambda: (cnt, False) in [c[:2] for c in connections], 5.0)
            lost_at = next(t for n, ok, t in connections if n == cnt and not ok)
            assert lost_at - killed < 5.0
            assert not client.is_connected(cnt)

            ioc.start()
            seen = len(updates[cnt])
            assert await _wait_for(lambda: len(updates[cnt]) > seen + 2, 10.0)
            assert client.is_connected(cnt)
            assert client.disconnects >= 3

    run(go())
    counts = [e["value"] for e in updates[cnt]]
    assert all(e["connected"] and e["severity"] == 0 for e in updates[cnt])
    assert counts[:3] == sorted(counts[:3])
    assert any(name == cnt and ok for name, ok, _ in connections[-3:])


# --- circuit breakers -----------------------------------------------------------------------


def test_breaker_opens_after_failures_half_opens_and_closes(redis_client):
    breakers = CircuitBreakers(threshold=3, cool_down=0.2)
    for _ in range(2):
        breakers.failure("A:B")
    assert breakers.allow("A:B")
    breakers.failure("A:B")
    assert not breakers.allow("A:B")
    state = circuits_read()[0]
    assert state["name"] == "A:B" and state["state"] == "open"
    assert state["failure_count"] == 3 and state["call_count"] == 3
    assert state["opened_at"] and state["last_failure"] and state["forced"] is None
    time.sleep(0.25)
    assert breakers.allow("A:B")  # trial call
    assert circuits_read()[0]["state"] == "half_open"
    breakers.failure("A:B")
    assert not breakers.allow("A:B")  # failed trial: open again
    time.sleep(0.25)
    assert breakers.allow("A:B")
    breakers.success("A:B")
    state = circuits_read()[0]
    assert state["state"] == "closed" and state["failure_count"] == 0
    assert set(state) == {
        "name", "state", "failure_count", "success_count", "call_count",
        "last_failure", "opened_at", "forced",
    }  # fmt: skip


def test_another_process_first_success_does_not_hide_an_open_breaker(redis_client):
    worker_a, worker_b = CircuitBreakers(threshold=2), CircuitBreakers(threshold=2)
    worker_a.failure("P:Q")
    worker_a.failure("P:Q")
    assert circuits_read()[0]["state"] == "open"
    worker_b.success("P:Q")  # its first call to that IOC happened to get through
    assert circuits_read()[0]["state"] == "open"
    worker_b.success("NEW:IOC")  # a first call still lists a new IOC
    assert [s["name"] for s in circuits_read()] == ["NEW:IOC", "P:Q"]


def test_record_of_many_iocs_at_once(redis_client):
    """A 50K-PV read reports thousands of IOCs in one call: all listed, failures saved, an
    operator's forced state kept."""
    circuit_force(name="IOC:7", state="open")
    breakers = CircuitBreakers(threshold=1)
    calls = {f"IOC:{i}": i % 10 != 3 for i in range(5000)}
    breakers.record(calls)
    stored = {s["name"]: s for s in circuits_read()}
    assert len(stored) == 5000
    assert stored["IOC:0"]["state"] == "closed" and stored["IOC:0"]["call_count"] == 1
    assert stored["IOC:3"]["state"] == "open" and stored["IOC:3"]["failure_count"] == 1
    assert sum(s["state"] == "open" for s in stored.values()) == 500 + 1  # + forced IOC:7
    assert stored["IOC:7"]["forced"] == "open"
    breakers.record({"IOC:3": True, "IOC:7": False})
    stored = {s["name"]: s for s in circuits_read()}
    assert stored["IOC:3"]["state"] == "closed" and stored["IOC:3"]["call_count"] == 2
    assert stored["IOC:7"]["forced"] == "open" and stored["IOC:7"]["failure_count"] == 1


def test_forced_state_is_picked_up_from_redis(redis_client):
    breakers = CircuitBreakers(threshold=1)
    circuit_force(name="X:Y", state="open")
    breakers.forced_read_at = 0.0
    assert not breakers.allow("X:Y")
    circuit_force(name="X:Y", state="closed")
    breakers.forced_read_at = 0.0
    breakers.failure("X:Y")
    assert breakers.allow("X:Y")
    stored = msgpack.unpackb(redis_client.hget(events.circuits_key(), "X:Y"), raw=False)
    assert stored["forced"] == "closed"
    with pytest.raises(Invalid):
        circuit_force(name="X:Y", state="sideways")


def test_open_breaker_short_circuits_reads_and_writes(ioc, redis_client):
    breakers = CircuitBreakers(threshold=1, cool_down=60)
    missing = ioc.name("MISSING")
    ioc_of = ioc_name(missing)

    async def go():
        async with CAClient(breakers=breakers) as client:
            first = await client.read_many([missing], 0.3)
            started = time.monotonic()
            second = await client.read_many([missing, ioc.name("AO")], 0.3)
            write = await client.write_many({ioc.name("AO"): 1.0}, 0.3)
            return first, second, time.monotonic() - started, write

    first, second, _, write = run(go())
    assert "not connected" in first[missing]["error"]
    assert second[missing]["error"] == f"circuit breaker open for IOC {ioc_of}"
    assert second[ioc.name("AO")]["error"] == second[missing]["error"]  # same IOC name
    assert not write[ioc.name("AO")].ok and "circuit breaker open" in write[ioc.name("AO")].error
    assert [c["state"] for c in circuits_read() if c["name"] == ioc_of] == ["open"]


def test_entries_pack_and_clean_nan(ioc):
    """A NaN from the IOC never leaves the client: value None and error set."""
    name = ioc.name("AO")

    async def go():
        async with CAClient() as client:
            await client.write_many({name: float("nan")}, 3.0)
            return await client.read_many([name], 3.0)

    entry = run(go())[name]
    assert entry["value"] is None and entry["error"] == values.NON_FINITE
    assert values.unpack(values.pack(entry))["error"] == values.NON_FINITE


def test_hung_ioc_detected_by_echo_then_recovers(ioc, monkeypatch):
    """An IOC that stops answering (SIGSTOP: the TCP connection stays open) is noticed by
    the echo watchdog after EPICS_CA_CONN_TMO, and its channels come back after SIGCONT."""
    monkeypatch.setenv("EPICS_CA_CONN_TMO", "1.0")
    cnt = ioc.name("CNT")
    connections: list[tuple[str, bool]] = []

    async def go():
        async with CAClient() as client:
            client.subscribe(
                [cnt], lambda name, entry: None, lambda n, ok: connections.append((n, ok))
            )
            assert await _wait_for(lambda: client.is_connected(cnt), 5.0)
            sigstop(ioc.proc.pid)
            try:
                stopped = time.monotonic()
                assert await _wait_for(lambda: not client.is_connected(cnt), 6.0)
                noticed = time.monotonic() - stopped
            finally:
                ioc.proc.send_signal(signal.SIGCONT)
            assert await _wait_for(lambda: client.is_connected(cnt), 10.0)
            return noticed

    noticed = run(go())
    print(f"hung IOC noticed after {noticed:.2f} s")
    assert connections[-2:] == [(cnt, False), (cnt, True)]


def test_refused_lists_open_and_forced_iocs(redis_client):
    """What a call of many names asks once, instead of ``allow`` per name; forced states come
    from their own small hash, not from the state of every IOC ever called."""
    breakers = CircuitBreakers(threshold=1, cool_down=60)
    assert breakers.refused() == frozenset()
    breakers.record({f"IOC:{i}": True for i in range(2000)} | {"A:1": False})
    circuit_force(name="F:1", state="open")
    circuit_force(name="IOC:5", state="closed")
    breakers.forced_read_at = 0.0
    assert breakers.refused() == {"A:1", "F:1"}
    assert breakers.forced == {"F:1": "open", "IOC:5": "closed"}

"""Fixtures of the restore tests: snapshots built from rows, a live cache, real workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from monitor import events, values
from pvs.models import PV
from snapshots.models import Snapshot, SnapshotValue, ValueKind, ValueSource


def snapshot_make(rows: list[tuple[PV | None, Any]], *, title: str = "saved") -> Snapshot:
    """A snapshot whose setpoint values are ``rows`` of (PV, value): a number, a string, a
    (label, index) enum, or None for a failed read."""
    snap = Snapshot.objects.create(title=title, pv_count=len(rows))
    objs = []
    for index, (pv, value) in enumerate(rows):
        kind = num = text = None
        if isinstance(value, tuple):  # (label, index) of an enum
            kind, text, num = ValueKind.ENUM, value[0], float(value[1])
        elif isinstance(value, str):
            kind, text = ValueKind.STRING, value
        elif isinstance(value, int | float):
            kind, num = ValueKind.FLOAT, float(value)
        objs.append(
            SnapshotValue(
                snapshot=snap,
                pv=pv,
                pv_name=pv.name if pv else f"GONE:{index}",
                setpoint_address=pv.setpoint_address if pv else f"GONE:{index}",
                readback_address=pv.readback_address if pv else None,
                sp_kind=kind if value is not None else ValueKind.NONE,
                sp_num=num,
                sp_text=text,
                sp_source=ValueSource.CACHE,
                sp_connected=value is not None,
                sp_error=None if value is not None else "no answer",
            )
        )
    SnapshotValue.objects.bulk_create(objs)
    return snap


def cache_set(client, entries: dict[str, Any], *, connected: bool = True) -> None:
    """Live values in the monitor's cache, with a fresh monitor heartbeat."""
    now = time.time()
    client.set(events.heartbeat_key(), str(now))
    client.hset(
        events.values_hash(),
        mapping={
            address: values.pack({"value": value, "connected": connected, "updated_at": now})
            for address, value in entries.items()
        },
    )


@pytest.fixture
def write_client(db):
    """The restore tests' caller: a key named "writer" with read, write AND restore scope
    (restoring needs the restore scope of its own since issue 18; test_governance.py checks
    each scope)."""
    from rest_framework.test import APIClient

    from tests.conftest import make_key

    _, token = make_key("writer", read=True, write=True, restore=True)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


from tests import epics  # noqa: E402
from tests.epics import free_port  # noqa: E402
from tests.processes import ROOT, Worker, worker_env, workers  # noqa: E402, F401

# --- a simulated IOC -----------------------------------------------------------------------------


class SimIOC(epics.SimIOC):
    """A sim IOC on a free port whose values change only when written (restore checks exact
    values)."""

    def __init__(self, *, count: int, prefix: str) -> None:
        super().__init__(count=count, prefix=prefix, port=free_port(), options={"update_share": 0})


@pytest.fixture
def iocs(monkeypatch) -> Iterator[list[SimIOC]]:
    """Start IOCs with ``iocs.append(SimIOC(...).start())``; the Channel Access environment of
    this process (and of workers started afterwards) searches exactly their ports."""
    started: list[SimIOC] = []

    def point_at(ports: list[int]) -> None:
        monkeypatch.setenv("EPICS_CA_ADDR_LIST", " ".join(f"127.0.0.1:{p}" for p in ports))
        monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "NO")

    started_ports: list[int] = []

    class _List(list):
        def append(self, ioc: SimIOC) -> None:  # type: ignore[override]
            super().append(ioc)
            started_ports.append(ioc.port)
            point_at(started_ports)

    holder = _List()
    yield holder
    for ioc in holder:
        ioc.stop()
    del started


def ca_read(names: list[str], timeout: float = 3.0) -> dict[str, Any]:
    """Values read straight from the IOC with caproto's synchronous client (not our code)."""
    from caproto.sync.client import read

    out: dict[str, Any] = {}
    for name in names:
        response = read(name, timeout=timeout, repeater=False)
        data = response.data
        value = data.tolist() if hasattr(data, "tolist") else list(data)
        if value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[name] = value[0] if len(value) == 1 else value
    return out


def ca_write(name: str, value: Any) -> None:
    from caproto.sync.client import write

    write(name, value, notify=True, timeout=3.0, repeater=False)

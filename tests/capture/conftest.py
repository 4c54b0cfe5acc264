"""Fixtures of the capture tests: an EPICS network where nobody answers, real workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def quiet_epics(monkeypatch) -> int:
    """Loopback Channel Access on a port no IOC serves: every direct read times out."""
    port = free_port()
    for name, value in epics_env(port).items():
        monkeypatch.setenv(name, value)
    return port


from tests.epics import epics_env, free_port  # noqa: E402
from tests.processes import ROOT, Worker, database_url, worker_env, workers  # noqa: E402, F401

# --- the simulated IOC and the monitor as subprocesses ----------------------------------------


class Proc:
    """A ``manage.py`` subprocess whose output is kept; always stopped by its fixture."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {text!r} from {self.proc.args}:\n" + "".join(self.lines[-30:]))

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    """Subprocesses a test starts (IOC, monitor); all stopped at teardown."""
    started: list[Proc] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def sim_catalog(
    processes: list[Proc], monkeypatch: pytest.MonkeyPatch, *, count: int, prefix: str
) -> tuple[list[Any], dict[str, str], Proc]:
    """A sim IOC of ``count`` devices on its own port, this process's EPICS environment
    pointed at it, and the devices in the catalog; (devices, the EPICS environment, the IOC)."""
    from monitor import sim
    from pvs.models import PV

    port = free_port()
    env = epics_env(port)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ioc = Proc(["sim_ioc", "--count", str(count), "--prefix", prefix, "--port", str(port)],
               worker_env(**env))  # fmt: skip
    processes.append(ioc)
    ioc.wait_for("sim_ioc ready", 120)
    devices = sim.sim_devices(count=count, prefix=prefix)
    PV.objects.bulk_create(
        [PV(setpoint_address=d.setpoint, readback_address=d.readback) for d in devices]
    )
    return devices, env, ioc

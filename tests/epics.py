"""Helpers for tests that talk Channel Access to the simulated IOC (``manage.py sim_ioc``).

Every IOC runs as a subprocess on loopback, on its own free server port with its own repeater
port, and its own pvAccess port (server and search, CA port + 2), so parallel runs never answer
each other's searches. Use ``run_sim_ioc`` for an IOC of a
test's own, or the module-scoped ``sim_ioc`` fixture (``from tests.epics import sim_ioc  #
noqa: F401``) for a small shared one. No process outlives its context manager or fixture.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"
READY = "sim_ioc ready:"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port P free for TCP and UDP whose P+1 is free for UDP too (P+1 = repeater port) and
    P+2 for TCP and UDP (the pvAccess server and search port, ``pva_port``)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if (
            port < 65534
            and _bindable(port, socket.SOCK_DGRAM)
            and _bindable(port + 1, socket.SOCK_DGRAM)
            and _bindable(port + 2, socket.SOCK_DGRAM)
            and _bindable(port + 2, socket.SOCK_STREAM)
        ):
            return port
    raise RuntimeError("no free port pair found")


def pva_port(port: int) -> int:
    """The pvAccess port of the test IOC whose CA port is ``port`` (``free_port``)."""
    return port + 2


def epics_env(port: int) -> dict[str, str]:
    """The loopback EPICS environment of a test IOC serving on ``port`` (repeater on port+1,
    pvAccess on port+2)."""
    return {
        "EPICS_PVA_SERVER_PORT": str(pva_port(port)),
        "EPICS_PVA_BROADCAST_PORT": str(pva_port(port)),
        "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CA_REPEATER_PORT": str(port + 1),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    }


@contextmanager
def epics_environ(port: int) -> Iterator[dict[str, str]]:
    """Set ``epics_env(port)`` in this process's environment for the block, then restore it.

    caproto reads the EPICS variables when a client context is created, so create clients
    inside the block.
    """
    env = epics_env(port)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SimIOC:
    """A running ``manage.py sim_ioc`` subprocess."""

    def __init__(self, *, count: int, prefix: str, port: int, options: dict[str, object]):
        self.count = count
        self.prefix = prefix
        self.port = port
        self.options = options
        self.env = epics_env(port)
        self.channels: int | None = None
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    # Names -----------------------------------------------------------------------------
    def setpoint(self, index: int) -> str:
        return f"{self.prefix}:DEV{index}:SP"

    def readback(self, index: int) -> str:
        return f"{self.prefix}:DEV{index}:RBV"

    # An independent CA client (caproto's sync client, no repeater spawned) ----------------
    def read(self, name: str, *, timeout: float = 3.0, **kw: Any) -> Any:
        """caproto ``ReadNotifyResponse`` of ``name`` from this IOC (``.data``, ``.metadata``).

        Pass ``data_type=caproto.ChannelType.CTRL_DOUBLE`` (etc.) for metadata."""
        from caproto.sync import client

        with epics_environ(self.port):
            return client.read(name, timeout=timeout, repeater=False, **kw)

    def value(self, name: str, *, timeout: float = 3.0) -> Any:
        """The value of ``name``: a scalar (str for strings), or a list for arrays."""
        data = self.read(name, timeout=timeout).data
        items = [d.decode() if isinstance(d, bytes) else d for d in data]
        items = [d.item() if hasattr(d, "item") else d for d in items]
        return items[0] if len(items) == 1 else items

    def write(self, name: str, value: Any, *, timeout: float = 3.0) -> None:
        """Put ``value`` to ``name`` and wait for completion."""
        from caproto.sync import client

        with epics_environ(self.port):
            client.write(name, value, notify=True, timeout=timeout, repeater=False)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # Lifecycle ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        args = [sys.executable, str(MANAGE), "sim_ioc", "--count", str(self.count)]
        args += ["--prefix", self.prefix, "--port", str(self.port)]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value not in (None, False):
                args += [flag, str(value)]
        return args

    def start(self, timeout: float = START_TIMEOUT) -> SimIOC:
        """Start the IOC and wait for its ready line; raise (after killing it) if it fails."""
        if self.running:
            raise RuntimeError("sim IOC already running")
        env = {**os.environ, **self.env}
        # The child is not under pytest, so it has no throwaway key of its own.
        env.setdefault("SQUIRREL_SECRET_KEY", "sim-ioc-" + secrets.token_hex(8))
        process = subprocess.Popen(
            self.command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._process = process
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, args=(process, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or (line == "" and remaining <= 0):
                self.kill()
                why = "exited" if line is None else f"not ready after {timeout:.0f} s"
                raise RuntimeError(f"sim_ioc {why}:\n" + "".join(self.output[-40:]))
            if line.startswith(READY):
                self.channels = int(line.split()[2])
                return self

    def _drain(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not exit in time); the exit code."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL (an IOC crash) and reap."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = START_TIMEOUT) -> SimIOC:
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start(timeout)


@contextmanager
def run_sim_ioc(
    count: int = 50, prefix: str | None = None, port: int | None = None, **options: object
) -> Iterator[SimIOC]:
    """A started sim IOC for the block; always killed at the end.

    ``options`` are the command's other flags in snake case (``update_share=0.5``,
    ``rate=10``, ``write_csv=path``).
    """
    ioc = SimIOC(
        count=count,
        prefix=prefix or f"T{secrets.token_hex(3).upper()}",
        port=port or free_port(),
        options=options,
    )
    try:
        yield ioc.start()
    finally:
        ioc.stop()


@pytest.fixture(scope="module")
def sim_ioc() -> Iterator[SimIOC]:
    """A small sim IOC (50 devices, 10 % of channels changing at 1 Hz) shared by a module."""
    with run_sim_ioc(50) as ioc:
        yield ioc


# --- a small hand-written IOC (softioc's EPICS core) ---------------------------------------------

# ``$(P)SLOW`` takes its value at once but completes a put with completion only 30 s later (the
# calcout's output delay holds the put's processing chain open): a put in flight that an IOC
# death or hang can interrupt.
_IOC_SCRIPT = """
import sys
from softioc import softioc, asyncio_dispatcher
softioc.dbLoadDatabase(sys.argv[1])
softioc.iocInit(asyncio_dispatcher.AsyncioDispatcher(), enable_pva=False)
print("READY", flush=True)
sys.stdin.read()
"""

_DB = """
record(ao, "$(P)AO") {{ field(VAL, "1.5") field(EGU, "mm") field(PREC, "3")
  field(DRVH, "10") field(DRVL, "-10") field(HOPR, "10") field(LOPR, "-10") field(PINI, "YES") }}
record(ai, "$(P)RB") {{ field(INP, "$(P)AO CP") field(EGU, "mm") field(PREC, "3") }}
record(mbbo, "$(P)ENUM") {{ field(ZRST, "Off") field(ONST, "On") field(TWST, "Fault")
  field(VAL, "1") field(PINI, "YES") }}
record(stringout, "$(P)STR") {{ field(VAL, "hello") field(PINI, "YES") }}
record(waveform, "$(P)WF") {{ field(FTVL, "DOUBLE") field(NELM, "1000") }}
record(ao, "$(P)NEW") {{ field(VAL, "7") field(PINI, "YES") }}
record(calc, "$(P)CNT") {{ field(SCAN, ".1 second") field(CALC, "A+1") field(INPA, "$(P)CNT") }}
record(ao, "$(P)SLOW") {{ field(VAL, "0") field(FLNK, "$(P)SLOW:DLY") }}
record(calcout, "$(P)SLOW:DLY") {{ field(CALC, "A") field(INPA, "$(P)SLOW") field(ODLY, "30")
  field(OUT, "$(P)SLOW:RB PP") }}
record(ai, "$(P)SLOW:RB") {{ }}
{extra}
"""


def sigstop(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP ``pid`` and return once every one of its threads has stopped. ``kill`` only
    queues the signal: an IOC that was running then still answered a put sent right after it
    (the hung-IOC test failed 2 runs in 12 that way)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
            states.append(stat.rsplit(")", 1)[1].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} not stopped after {timeout} s: {states}")
        time.sleep(0.001)


class SoftIoc:
    """A softioc subprocess serving a small database on its own CA port; restartable."""

    def __init__(self, tmp: Path, prefix: str, extra: str = "") -> None:
        self.prefix = prefix
        self.port = free_port()
        self.repeater = self.port + 1
        self.db = tmp / "test.db"
        self.db.write_text(_DB.format(extra=extra).replace("$(P)", prefix))
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            "EPICS_CA_SERVER_PORT": str(self.port),
            "EPICS_CA_REPEATER_PORT": str(self.repeater),
            "EPICS_CA_ADDR_LIST": "127.0.0.1",
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        }

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _IOC_SCRIPT, str(self.db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env()},
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY"):
                return
        raise RuntimeError("test IOC did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

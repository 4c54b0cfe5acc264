"""Fixtures of the capture tests: an EPICS network where nobody answers, real workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def quiet_epics(monkeypatch) -> int:
    """Loopback Channel Access on a port no IOC serves: every direct read times out."""
    port = _free_port()
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "127.0.0.1")
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "NO")
    monkeypatch.setenv("EPICS_CA_SERVER_PORT", str(port))
    monkeypatch.setenv("EPICS_CA_REPEATER_PORT", str(_free_port()))
    return port


# --- a real Celery worker process ------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
CELERY = Path(sys.executable).with_name("celery")


class Worker:
    """``celery -A squirrel worker`` as a subprocess on the test database; output is kept."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 30.0) -> Worker:
        self._ready.clear()
        self.proc = subprocess.Popen(
            [str(CELERY), "-A", "squirrel", "worker", "--pool", "solo", "--loglevel", "info",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines[-40:]))
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()

    def kill(self) -> None:
        """SIGKILL, as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def output(self) -> str:
        return "".join(self.lines)


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker on this test run's database and Redis prefix."""
    db = django_settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    env = {
        **os.environ,
        "SQUIRREL_DATABASE_URL": f"postgresql://{user}@{host}:{port}/{db['NAME']}",
        "SQUIRREL_REDIS_PREFIX": django_settings.REDIS_PREFIX,
        "SQUIRREL_SECRET_KEY": "test-worker",
        "SQUIRREL_CELERY_VISIBILITY_TIMEOUT": "10",
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Start workers with ``workers.append(Worker(worker_env(...)).start())``; all are
    stopped (or killed) at teardown."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


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


def epics_env(port: int) -> dict[str, str]:
    """Loopback Channel Access on ``port`` with a repeater port of its own."""
    return {
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CA_REPEATER_PORT": str(_free_port()),
    }

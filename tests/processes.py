"""Real processes for end-to-end tests: Celery workers on this run's database and Redis prefix.

Shared by the capture, restore and live tests; every process started here is stopped (or
killed) by its fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

# --- a real Celery worker process ------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]
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


class Beat(Worker):
    """``celery -A squirrel beat`` (no flags: the database scheduler is the settings')."""

    def start(self, timeout: float = 30.0) -> Beat:
        self._ready.clear()
        self.proc = subprocess.Popen(
            [str(CELERY), "-A", "squirrel", "beat", "--loglevel", "info"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("beat did not start:\n" + "".join(self.lines[-40:]))
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            if "beat: Starting" in line:
                self._ready.set()


def database_url() -> str:
    """This test run's database (pytest-django's test database) as a SQUIRREL_DATABASE_URL."""
    db = django_settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    return f"postgresql://{user}@{host}:{port}/{db['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker on this test run's database and Redis prefix."""
    env = {
        **os.environ,
        "SQUIRREL_DATABASE_URL": database_url(),
        "SQUIRREL_REDIS_PREFIX": django_settings.REDIS_PREFIX,
        "SQUIRREL_SECRET_KEY": "test-worker",
        "SQUIRREL_CELERY_VISIBILITY_TIMEOUT": "10",
        "EPICS_CA_ADDR_LIST": os.environ.get("EPICS_CA_ADDR_LIST", "127.0.0.1"),
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

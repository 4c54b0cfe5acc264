"""A real daphne for the edge tests, started as production starts it (limits.DAPHNE_OPTIONS).

The limits under test live in daphne's own request handling (bodies are read before the ASGI
app runs) and in autobahn's message size checks, so an in-process ASGI test cannot see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from squirrel.limits import DAPHNE_OPTIONS
from tests.epics import free_port
from tests.processes import ROOT, database_url

DAPHNE = str(Path(sys.executable).with_name("daphne"))


@dataclass
class Web:
    """A daphne process on 127.0.0.1:``port``; its output goes to ``log``."""

    proc: subprocess.Popen
    port: int
    log: Path
    _baseline: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _status_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field}")

    def rss_mb(self) -> float:
        """daphne's resident set size now, in MiB."""
        return self._status_mb("VmRSS")

    def start_measuring(self) -> float:
        """Reset daphne's peak RSS (Linux: clear_refs 5) and return its RSS now, in MiB: what
        ``grown_mb`` compares against. The peak, because memory a request took and gave back
        by the time it was answered was still taken (a 100 MB body in daphne's queue, freed
        after the 413, left the RSS where it was but had doubled it meanwhile)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        self._baseline = self.rss_mb()
        return self._baseline

    def grown_mb(self) -> float:
        """How far daphne's peak RSS rose above its RSS at ``start_measuring``, in MiB."""
        return self._status_mb("VmHWM") - self._baseline

    def get_json(self, path: str) -> dict:
        import json

        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.loads(response.read())

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Iterator[Web]:
    """daphne on this run's test database name and Redis prefix, anonymous read access."""
    log = tmp_path_factory.mktemp("web") / "daphne.log"
    port = free_port()
    env = {
        **os.environ,
        "SQUIRREL_DATABASE_URL": database_url(),
        "SQUIRREL_REDIS_PREFIX": settings.REDIS_PREFIX,
        "SQUIRREL_SECRET_KEY": "edge-tests",
        "SQUIRREL_ANONYMOUS_ACCESS": "read",
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("w") as out:
        proc = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS,
             "squirrel.asgi:application"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    web = Web(proc, port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                web.get_json("/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("daphne did not start:\n" + web.tail()) from None
                time.sleep(0.1)
        time.sleep(0.5)  # let its start-up allocations settle before anyone measures RSS
        yield web
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

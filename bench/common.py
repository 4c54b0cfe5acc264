"""What the benchmarks share: free ports and child processes whose output they wait on."""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_daphne(port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A daphne web process on 127.0.0.1:``port``, returned once GET /health answers 200."""
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port),
         "squirrel.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    process.wait()
    raise RuntimeError("daphne did not answer within 30 s")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A child process whose output is kept; ``wait_for`` a line containing some text."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        """Return once a line contains ``text``; stop the process and raise if it exits or
        ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name}: no {text!r}:\n" + "".join(self.lines[-30:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# Tables a benchmark fills with 50K-row sets and deletes again.
CHURNED_TABLES = (
    "pv", "snapshot", "snapshot_value", "value_meta", "job", "restore", "restore_plan",
    "restore_plan_item", "restore_outcome", "restore_claim",
)  # fmt: skip


def vacuum() -> float:
    """VACUUM ANALYZE the tables benchmarks churn; the seconds it took. A server with
    autovacuum off (some test machines) otherwise keeps every deleted 50K-row set as dead
    rows, and each run inserts into more bloated tables and indexes than the last: restore
    phases here were 20-70 % slower with 650K dead plan items than after a VACUUM."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE " + ", ".join(CHURNED_TABLES))
    return time.perf_counter() - started

"""What the benchmarks share: free ports, child processes whose output they wait on, VACUUM
of the tables they churn, and the CPU seconds processes spend (``CpuMeter``)."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# squirrel/limits.py's DAPHNE_OPTIONS (written out: the benchmarks do not set Django up first)
DAPHNE_OPTIONS = ["--websocket-max-message-size", "8388608",
                  "--websocket-max-frame-size", "8388608"]  # fmt: skip


def start_daphne(port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A daphne web process on 127.0.0.1:``port``, returned once GET /health answers 200."""
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port),
         *DAPHNE_OPTIONS, "squirrel.asgi:application"],
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


def _cpu_of(stat: str) -> tuple[str, float]:
    """(command name, CPU seconds) of one /proc/<pid>/stat text: user and system time of the
    process and of its children that have exited (a PostgreSQL backend that ends meanwhile,
    as a worker's does after each task, is then counted in the postmaster's)."""
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat.rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return name, ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent by named processes, and by all PostgreSQL server processes, between
    ``start()`` and ``stop()`` (Linux /proc). On a machine with few cores the sum, divided by
    the cores, is a floor under the wall time of whatever they did together."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = dict.fromkeys([*self.pids, "postgres"], 0.0)
        by_pid = {pid: name for name, pid in self.pids.items()}
        for stat_path in Path("/proc").glob("[0-9]*/stat"):
            try:
                comm, cpu = _cpu_of(stat_path.read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            pid = int(stat_path.parent.name)
            if pid in by_pid:
                out[by_pid[pid]] += cpu
            elif comm.startswith("postgres"):
                out["postgres"] += cpu
        return out

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        end = self._now()
        return {name: round(end[name] - self._start.get(name, 0.0), 2) for name in end}


def cpu_text(spent: dict[str, float], wall: float) -> str:
    """One line for a measurement: each process's CPU seconds, their sum, and the wall time
    that sum needs at the least on this machine's cores."""
    total = sum(spent.values())
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{name} {cpu:.2f}" for name, cpu in spent.items())
    return (f"CPU s: {parts}; sum {total:.2f} over {cores} cores needs >= {total / cores:.2f} s "
            f"(took {wall:.2f} s)")  # fmt: skip

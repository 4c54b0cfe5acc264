"""The whole Squirrel stack as real processes, for the end-to-end and fault tests.

``Stack`` starts, on loopback and free ports, with a database of its own:

* the simulated IOC (``tests.epics.SimIOC``), whose CSV catalog is imported with
  ``manage.py import_pvs`` into a freshly migrated private PostgreSQL database;
* one or more ``manage.py monitor`` processes (the first is the leader, the others standbys);
* Celery workers (``tests.processes.Worker``);
* daphne, serving the API that the tests talk to over HTTP (``Api``);
* optionally a private ``redis-server`` (``RedisServer``), else the shared Redis under a key
  prefix of the stack's own (below this test run's prefix).

``Stack.close`` kills every process (process groups), drops the database, deletes the stack's
Redis keys (or stops its redis-server) and removes its temporary files, whatever state the
test left it in.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis
from django.conf import settings

from monitor import sim
from squirrel.limits import DAPHNE_OPTIONS
from tests.epics import SimIOC, epics_env, free_port
from tests.processes import ROOT, Worker, database_url, worker_env

PYTHON = sys.executable
MANAGE = str(ROOT / "manage.py")
DAPHNE = str(Path(sys.executable).with_name("daphne"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STOP_TIMEOUT = 10.0
# The fault stack's circuit-breaker cool-down (SQUIRREL_CIRCUIT_COOL_DOWN; 30 s in production).
FAULT_COOL_DOWN = 5.0


def figure(text: str) -> None:
    """Report a measured figure: a ``FIGURE:`` line on stdout, and appended to the file named
    by ``SQUIRREL_E2E_FIGURES`` when that is set."""
    line = f"FIGURE: {text}"
    print(line, flush=True)
    path = os.environ.get("SQUIRREL_E2E_FIGURES")
    if path:
        with Path(path).open("a") as out:
            out.write(line + "\n")


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    context: Callable[[], str] | None = None,
) -> float:
    """Poll ``predicate`` until it is truthy; the seconds that took. AssertionError (naming
    ``what``, with ``context()`` appended) once ``timeout`` has passed."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            extra = "\n" + context() if context is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s{extra}")
        time.sleep(interval)


def connected_to(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds an established TCP connection to 127.0.0.1:``port``
    (read from /proc: its socket inodes against the kernel's TCP table)."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    remote = f"0100007F:{port:04X}"
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in table:
        fields = line.split()
        if fields[2] == remote and fields[3] == "01" and fields[9] in inodes:
            return True
    return False


# --- processes ---------------------------------------------------------------------------------


class Proc:
    """A subprocess in a session (process group) of its own; its output is kept (bounded)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.lines: collections.deque[str] = collections.deque(maxlen=3000)
        self.total = 0  # lines received in all (``lines`` keeps the last ones)
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Proc:
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)
            self.total += 1

    def output_since(self, mark: int) -> str:
        """The output after the first ``mark`` lines (as far as ``lines`` still holds it)."""
        return "".join(list(self.lines)[-(self.total - mark) :] if self.total > mark else [])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, signum: int) -> None:
        assert self.proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash) and reap."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self._signal_group(signal.SIGKILL)  # also any child left in the group
        self.proc.wait(STOP_TIMEOUT)

    def tail(self, lines: int = 25) -> str:
        return "".join(list(self.lines)[-lines:])


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        self.proc = Proc("redis", args, dict(os.environ)).start()
        wait_for(self.ping, timeout, f"redis-server on {self.port}", context=self.proc.tail)
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


# --- HTTP --------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, or None
    text: str
    seconds: float

    def payload(self) -> Any:
        """The envelope's payload of a success, after checking the envelope."""
        body = self.body
        assert self.status == 200, self.summary()
        assert isinstance(body, dict) and body.get("errorCode") == 0, self.summary()
        assert set(body) == {"errorCode", "errorMessage", "payload"}, self.summary()
        return body["payload"]

    def summary(self) -> str:
        return f"HTTP {self.status} in {self.seconds:.2f} s: {self.text[:500]}"


class Api:
    """A tiny JSON client for the stack's daphne (no proxies, bounded time)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 15.0) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        started = time.monotonic()
        try:
            with self.opener.open(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode(errors="replace")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        return Reply(status, parsed, text, time.monotonic() - started)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", path, {} if body is None else body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.call("DELETE", path, **kw)


# --- the stack ---------------------------------------------------------------------------------


def admin_connect() -> psycopg.Connection:
    return psycopg.connect(database_url().rsplit("/", 1)[0] + "/postgres", autocommit=True)


class Stack:
    """Sim IOC + monitor(s) + worker(s) + daphne on a private database (module docstring)."""

    def __init__(
        self,
        *,
        devices: int,
        monitors: int = 1,
        private_redis: bool = False,
        env: dict[str, str] | None = None,
        worker_env: dict[str, str] | None = None,
    ) -> None:
        tag = secrets.token_hex(3)
        self.devices = devices
        self.monitor_count = monitors
        self.private_redis = private_redis
        self.extra_env = env or {}
        self.worker_extra = worker_env or {}
        # "<X>:IOC:DEV<i>:SP": monitor.circuits.ioc_name gives one IOC name, "<X>:IOC",
        # for every channel of this simulated IOC, as for a real IOC's records.
        self.ioc_name = f"E{tag.upper()}:IOC"
        self.db_name = f"squirrel_e2e_{tag}"
        self.redis_prefix = f"{settings.REDIS_PREFIX}e2e-{tag}:"
        self.redis: RedisServer | None = None
        self.redis_url = settings.REDIS_URL
        self.tmp = Path(tempfile.mkdtemp(prefix="squirrel-e2e-"))
        self.ioc = SimIOC(
            count=devices,
            prefix=self.ioc_name,
            port=free_port(),
            options={"update_share": 0.0, "write_csv": self.tmp / "catalog.csv"},
        )
        self.sim_devices = sim.sim_devices(count=devices, prefix=self.ioc_name, update_share=0.0)
        self.addresses = [
            a for d in self.sim_devices for a in (d.setpoint, d.readback) if a is not None
        ]
        self.web_port = free_port()
        self.api = Api(f"http://127.0.0.1:{self.web_port}")
        self.web: Proc | None = None
        self.monitors: list[Proc] = []
        self.workers: list[Worker] = []
        self.db_created = False
        self.env: dict[str, str] = {}
        self.startup_seconds = 0.0
        self.last_state: object = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def stack_vars(self) -> dict[str, str]:
        """The variables every process of the stack gets on top of this process's env."""
        return {
            **epics_env(self.ioc.port),
            "SQUIRREL_DATABASE_URL": self.database_url,
            "SQUIRREL_REDIS_URL": self.redis_url,
            "SQUIRREL_REDIS_PREFIX": self.redis_prefix,
            "SQUIRREL_SECRET_KEY": "e2e-" + self.db_name,
            "SQUIRREL_ANONYMOUS_ACCESS": "restore",
            "SQUIRREL_CELERY_VISIBILITY_TIMEOUT": "10",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    @property
    def database_url(self) -> str:
        return database_url().rsplit("/", 1)[0] + "/" + self.db_name

    def start(self) -> Stack:
        started = time.monotonic()
        if self.private_redis:
            self.redis = RedisServer().start()
            self.redis_url = self.redis.url
        self.env = {**os.environ, **self.stack_vars}
        with admin_connect() as admin:
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        migrate = self.manage("migrate", "--noinput", "-v0", wait=False)
        self.ioc.start()  # (writes the CSV catalog) while the migrations run
        self.check_finished(migrate, "migrate", timeout=120)
        self.manage("import_pvs", str(self.tmp / "catalog.csv"))
        self.web = Proc("web", [DAPHNE, "-b", "127.0.0.1", "-p", str(self.web_port),
                                *DAPHNE_OPTIONS, "squirrel.asgi:application"],
                        self.env).start()  # fmt: skip
        self.monitors.append(self.monitor_start())
        self.worker_start()
        wait_for(lambda: self.api_up(), 30, "daphne answers", context=self.tails)
        self.wait_filled(timeout=60)
        for _ in range(self.monitor_count - 1):
            self.standby_start()
        self.startup_seconds = time.monotonic() - started
        return self

    def close(self) -> None:
        """Stop everything; never raises for one part so that every other part is cleaned."""
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as exc:  # cleanup goes on; reported at the end
                errors.append(f"{what}: {exc!r}")

        if self.web is not None:
            attempt("web", self.web.stop)
        for worker in self.workers:
            attempt("worker", worker.stop)
        for monitor in self.monitors:
            attempt("monitor", monitor.stop)
        attempt("ioc", self.ioc.stop)
        if self.redis is not None:
            attempt("redis", self.redis.stop)
        else:
            attempt("redis keys", self._delete_keys)
        if self.db_created:
            attempt("database", self._drop_database)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise RuntimeError("stack cleanup: " + "; ".join(errors))

    def _delete_keys(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.redis_prefix}*", count=10_000))
            for start in range(0, len(keys), 5000):
                client.delete(*keys[start : start + 5000])
        finally:
            client.close()

    def _drop_database(self) -> None:
        with admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    # --- processes ---------------------------------------------------------------------------
    def manage(self, *args: str, wait: bool = True, timeout: float = 120) -> subprocess.Popen:
        """``manage.py <args>`` on the stack's database; waits for success unless ``wait``
        is false."""
        proc = subprocess.Popen(
            [PYTHON, MANAGE, *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if wait:
            self.check_finished(proc, args[0], timeout=timeout)
        return proc

    @staticmethod
    def check_finished(proc: subprocess.Popen, what: str, *, timeout: float) -> None:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        assert proc.returncode == 0, f"manage.py {what} failed:\n{out[-3000:]}"

    def monitor_start(self) -> Proc:
        # --max-seconds: a monitor never outlives a crashed test run by long
        args = [PYTHON, MANAGE, "monitor", "--max-seconds", "900"]
        return Proc(f"monitor-{len(self.monitors)}", args, self.env).start()

    def standby_start(self) -> Proc:
        """Another monitor, returned once it is connected to Redis and so waiting on the
        leader lock (a standby)."""
        monitor = self.monitor_start()
        self.monitors.append(monitor)
        port = int(self.redis_url.rsplit(":", 1)[1].split("/")[0])
        wait_for(lambda: connected_to(monitor.pid, port), 30, "standby monitor up",
                 context=monitor.tail)  # fmt: skip
        return monitor

    def worker_start(self, **extra: str) -> Worker:
        worker = Worker(worker_env(**{**self.stack_vars, **self.worker_extra, **extra}))
        self.workers.append(worker)
        return worker.start()

    def workers_stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def tails(self) -> str:
        parts = []
        for proc in [self.web, *self.monitors]:
            if proc is not None:
                parts.append(f"--- {proc.name} (running={proc.running}) ---\n{proc.tail()}")
        for n, worker in enumerate(self.workers):
            parts.append(f"--- worker-{n} ---\n{''.join(worker.lines[-25:])}")
        parts.append(f"--- ioc ---\n{''.join(self.ioc.output[-10:])}")
        return "\n".join(parts)

    # --- API helpers -------------------------------------------------------------------------
    def api_up(self) -> bool:
        try:
            return self.api.get("/v1/health/heartbeat", timeout=2).status == 200
        except OSError:
            return False

    def cache_state(self) -> tuple[int, int, bool]:
        """(values cached, disconnected, monitor alive) as the API reports them."""
        cached = self.api.get("/v1/pvs/cache/status").payload()["cachedPvCount"]
        down = self.api.get("/v1/health/disconnected").body["count"]
        alive = self.api.get("/v1/health/heartbeat").payload()["alive"]
        return cached, down, alive

    def filled(self) -> bool:
        """Every catalog address cached and connected, and a live monitor."""
        try:
            self.last_state = self.cache_state()
        except (OSError, AssertionError, TypeError, KeyError) as exc:
            self.last_state = repr(exc)
            return False
        cached, down, alive = self.last_state
        return cached == len(self.addresses) and down == 0 and alive

    def wait_filled(self, timeout: float) -> float:
        """Seconds until ``filled``; AssertionError (with the last state) after ``timeout``."""

        def context() -> str:
            state = f"last (cached, disconnected, alive): {self.last_state}"
            return f"{state} of {len(self.addresses)}\n{self.tails()}"

        return wait_for(self.filled, timeout, "the monitor fills the cache", interval=0.1,
                        context=context)  # fmt: skip

    def live(self, names: Iterable[str]) -> dict[str, Any]:
        return self.api.post("/v1/pvs/live", {"pv_names": list(names)}).payload()

    def live_value(self, name: str) -> Any:
        entry = self.live([name]).get(name) or {}
        return entry.get("value") if entry.get("connected") else None

    def job(self, job_id: str) -> dict[str, Any]:
        return self.api.get(f"/v1/jobs/{job_id}").payload()

    def wait_job(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The job once completed or failed (AssertionError after ``timeout``)."""
        seen: dict[str, Any] = {}

        def finished() -> bool:
            seen.update(self.job(job_id))
            return seen["status"] in ("completed", "failed")

        wait_for(finished, timeout, f"job {job_id} finishes", interval=0.1,
                 context=lambda: f"last: {seen}\n{self.tails()}")  # fmt: skip
        return seen

    def snapshot(self, title: str, *, use_cache: bool = True, timeout: float = 60) -> dict:
        """Take a snapshot through the API and wait for its job; the completed job."""
        flag = "true" if use_cache else "false"
        reply = self.api.post(f"/v1/snapshots?use_cache={flag}", {"title": title, "comment": "e2e"})
        job = self.wait_job(reply.payload()["jobId"], timeout)
        assert job["status"] == "completed", (job, self.tails())
        return job

    def snapshot_summary(self, snapshot_id: str) -> dict[str, Any]:
        for summary in self.api.get("/v1/snapshots?limit=1000").payload():
            if summary["id"] == snapshot_id:
                return summary
        raise AssertionError(f"snapshot {snapshot_id} not listed")

    def circuit(self, name: str | None = None) -> dict[str, Any] | None:
        """This IOC's circuit breaker as GET /v1/health/circuits reports it, or None."""
        name = name or self.ioc_name
        body = self.api.get("/v1/health/circuits").body
        return next((c for c in body["circuits"] if c["name"] == name), None)

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Rows of a query on the stack's database (for checks the API does not expose)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    # --- devices -----------------------------------------------------------------------------
    def devices_of(self, kind: str, count: int, *, start: int = 0) -> list[sim.Device]:
        found = [d for d in self.sim_devices if d.kind == kind and d.index >= start]
        assert len(found) >= count, f"only {len(found)} {kind} devices"
        return found[:count]


@contextmanager
def run_stack(**options: Any) -> Iterator[Stack]:
    """A started ``Stack(**options)`` for the block; always closed at the end."""
    stack = Stack(**options)
    try:
        yield stack.start()
    finally:
        stack.close()

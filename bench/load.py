"""Load benchmark (issue 15): many REST and WebSocket clients against one daphne with the
default settings. Run by hand; prints figures.

    .venv/bin/python bench/load.py [--seconds 60] [--rest 100] [--ws 50] [--devices 2000]

Sets up, on a database of its own (``squirrel_bench_load`` unless SQUIRREL_DATABASE_URL is set)
and a Redis prefix of its own: a catalog of ``devices`` simulated devices (one held back, added
during the load), the simulated IOC, ``manage.py monitor``, one Celery worker (prefork, two
children, as ``make demo`` runs it) and daphne. Every process gets this environment as it is: the
database settings are the defaults unless you set them (``SQUIRREL_DB_POOL_MAX_SIZE=0
SQUIRREL_DB_CONN_MAX_AGE=60`` gives the behaviour before issue 15). Then, for ``seconds``:

* ``rest`` REST clients (threads in a process of their own, no think time), each looping over
  the frontend's reads: PV pages (following the continuation token), snapshot list and one
  snapshot's first values, a job, the heartbeat and health routes, tags, POST /v1/pvs/live;
* ``ws`` WebSocket clients (in another process), each subscribed to 100 PVs, receiving;
* the worker: one capture job after another through POST /v1/snapshots (a write key);
* the monitor: its heartbeat sampled, and a PV added to the catalog mid-way that it must
  subscribe and cache (it reads the catalog from the database);
* every 0.1 s: the PostgreSQL connections held by the web process (``pg_stat_activity`` by the
  ``application_name`` settings.py gives each process) and by everyone, and daphne's RSS.

Reports requests/s, latency p50/p99, 5xx and failed requests, WebSocket messages, the most
connections the web process held (against SQUIRREL_DB_POOL_MAX_SIZE), daphne's RSS, capture jobs
and the monitor's heartbeat. Exits 1 when a check fails (any 5xx or failed request, connections
over the bound, a capture job not completed, a stale heartbeat or the added PV not cached).
Every process it starts is stopped at the end; its Redis keys are deleted.

The client and sampling parts (``run_clients``, ``Sampler``) are shared with the short version in
``make test`` (tests/load/test_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# --- the clients (run in processes of their own; nothing here needs Django) ------------------


@dataclass(frozen=True)
class Call:
    """One request of the mix; ``follow``: also fetch the next page by the payload's
    continuationToken, as the frontend's PV browser does."""

    weight: int
    method: str
    path: str
    body: Any = None
    follow: bool = False


@dataclass
class RestResult:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    server_errors: Counter = field(default_factory=Counter)  # path -> 5xx count
    failures: Counter = field(default_factory=Counter)  # exception name -> count
    samples: list[str] = field(default_factory=list)  # the first few 5xx bodies and failures
    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    seconds: float = 0.0


@dataclass
class WsResult:
    clients: int = 0
    subscribed: int = 0  # clients that got their "initial" answer
    messages: int = 0
    types: Counter = field(default_factory=Counter)  # messages by "type"
    failures: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


def _path_key(path: str) -> str:
    return path.split("?", 1)[0]


def _rest_client(
    host: str,
    port: int,
    mix: list[Call],
    deadline: float,
    seed: int,
    result: RestResult,
    lock: threading.Lock,
) -> None:
    """One client: requests back to back on a kept-alive connection until ``deadline``."""
    rng = random.Random(seed)
    weights = [c.weight for c in mix]
    conn: http.client.HTTPConnection | None = None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    while time.monotonic() < deadline:
        call = rng.choices(mix, weights)[0]
        path = call.path
        for _hop in range(2 if call.follow else 1):
            body = None if call.body is None else json.dumps(call.body)
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request(call.method, path, body, headers)
                response = conn.getresponse()
                raw = response.read()
                status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                with lock:
                    result.failures[type(exc).__name__] += 1
                    if len(result.samples) < 10:
                        result.samples.append(f"{call.method} {path}: {exc!r}")
                break
            elapsed = time.perf_counter() - started
            with lock:
                result.requests += 1
                result.statuses[status] += 1
                result.latencies.append(elapsed)
                if status >= 500:
                    result.server_errors[_path_key(path)] += 1
                    if len(result.samples) < 10:
                        result.samples.append(f"{call.method} {path}: {status} {raw[:300]!r}")
            if not call.follow or status != 200:
                break
            token = (json.loads(raw).get("payload") or {}).get("continuationToken")
            if not token:
                break
            path = f"{call.path}&continuationToken={token}"
    if conn is not None:
        conn.close()


def run_rest(host: str, port: int, mix: list[Call], clients: int, seconds: float) -> RestResult:
    """``clients`` threads, each a REST client, for ``seconds``."""
    result = RestResult()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds
    threads = [
        threading.Thread(
            target=_rest_client, args=(host, port, mix, deadline, n, result, lock), daemon=True
        )
        for n in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    result.seconds = time.monotonic() - started
    return result


async def _ws_client(url: str, names: list[str], deadline: float, result: WsResult) -> None:
    import websockets

    result.clients += 1
    try:
        async with websockets.connect(url, max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "subscribe", "pvNames": names}))
            while (left := deadline - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=min(left, 1.0))
                except TimeoutError:
                    continue
                message = json.loads(raw)
                result.messages += 1
                result.types[message.get("type")] += 1
                if message.get("type") == "initial":
                    result.subscribed += 1
                elif message.get("type") == "error" and len(result.samples) < 10:
                    result.samples.append(f"error message: {raw[:300]!r}")
    except Exception as exc:  # counted and reported; one client's end is not the run's
        result.failures[type(exc).__name__] += 1
        if len(result.samples) < 10:
            result.samples.append(repr(exc)[:300])


def run_ws(url: str, subscriptions: list[list[str]], seconds: float) -> WsResult:
    """One WebSocket client per entry of ``subscriptions``, each subscribed to those names."""
    result = WsResult()

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_ws_client(url, names, deadline, result) for names in subscriptions))

    asyncio.run(main())
    return result


def _child(target: Any, args: tuple, out: Any) -> None:
    try:
        out.put(target(*args))
    except BaseException as exc:
        out.put(exc)


def run_clients(
    *,
    host: str,
    port: int,
    mix: list[Call],
    rest: int,
    subscriptions: list[list[str]],
    seconds: float,
) -> tuple[RestResult, WsResult]:
    """The REST clients and the WebSocket clients at once, each kind in a process of its own
    (so that neither's Python competes for the other's interpreter lock, nor the caller's)."""
    ctx = multiprocessing.get_context("spawn")
    outs = [ctx.Queue(), ctx.Queue()]
    procs = [
        ctx.Process(target=_child, args=(run_rest, (host, port, mix, rest, seconds), outs[0])),
        ctx.Process(
            target=_child,
            args=(run_ws, (f"ws://{host}:{port}/v1/ws/pvs", subscriptions, seconds), outs[1]),
        ),
    ]
    for proc in procs:
        proc.start()
    try:
        results = [out.get(timeout=seconds + 120) for out in outs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    for got in results:
        if isinstance(got, BaseException):
            raise got
    return results[0], results[1]


# --- what is measured from outside: connections, RSS ------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def web_application_name(pid: int) -> str:
    """The LIKE pattern of the connections of daphne ``pid`` (settings.DB_APPLICATION_NAME)."""
    return f"squirrel-web:{pid}@%"


class Sampler:
    """Every ``interval`` seconds in a thread: connections held by the process ``pid`` (by its
    application_name) and on the whole server, and the process's RSS; keeps the maxima."""

    def __init__(self, dsn: str, pid: int, interval: float = 0.1) -> None:
        self.dsn = dsn
        self.pid = pid
        self.interval = interval
        self.web_max = 0
        self.server_max = 0
        self.rss_max = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self.error: Exception | None = None

    def now(self) -> tuple[int, int]:
        """(connections of the web process, connections on the server) right now."""
        import psycopg

        with psycopg.connect(
            self.dsn, autocommit=True, application_name="squirrel-load-probe", connect_timeout=5
        ) as conn:
            return self._count(conn)

    def _count(self, conn: Any) -> tuple[int, int]:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE application_name LIKE %s), count(*) "
            "FROM pg_stat_activity WHERE backend_type = 'client backend'",
            [web_application_name(self.pid)],
        ).fetchone()
        return int(row[0]), int(row[1])

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(
                self.dsn, autocommit=True, application_name="squirrel-load-probe"
            ) as conn:
                while not self._stop.is_set():
                    web, server = self._count(conn)
                    self.web_max = max(self.web_max, web)
                    self.server_max = max(self.server_max, server)
                    self.rss_max = max(self.rss_max, rss_mb(self.pid))
                    self.samples += 1
                    self._stop.wait(self.interval)
        except Exception as exc:  # reported by stop()
            self.error = exc

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> Sampler:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"sampling pg_stat_activity failed: {self.error!r}")
        return self


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rest_text(rest: RestResult) -> str:
    five = sum(rest.server_errors.values())
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(rest.statuses.items()))
    return (
        f"{rest.requests} requests in {rest.seconds:.1f} s = "
        f"{rest.requests / max(rest.seconds, 1e-9):.1f} req/s; latency "
        f"p50 {pct(rest.latencies, 0.5) * 1000:.0f} ms, p99 {pct(rest.latencies, 0.99) * 1000:.0f}"
        f" ms, max {max(rest.latencies, default=0) * 1000:.0f} ms; 5xx {five}, failed "
        f"{sum(rest.failures.values())} ({statuses})"
    )


def ws_text(ws: WsResult) -> str:
    return (
        f"{ws.clients} clients, {ws.subscribed} subscribed, {ws.messages} messages "
        f"{dict(ws.types)}, "
        f"{sum(ws.failures.values())} failed {dict(ws.failures) or ''}"
    )


# --- the stack of the benchmark (by hand only) --------------------------------------------------


def _setup_env() -> None:
    os.environ.setdefault(
        "SQUIRREL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/squirrel_bench_load"
    )
    os.environ["SQUIRREL_REDIS_PREFIX"] = f"squirrel-bench-load-{os.getpid()}:"
    os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench-only")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
    os.environ["EPICS_CA_ADDR_LIST"] = "127.0.0.1"
    os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
    os.environ["PYTHONUNBUFFERED"] = "1"


def _ensure_database(url: str) -> None:
    import psycopg

    from squirrel.env import parse_database_url

    db = parse_database_url(url)
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]]).fetchone():
            return
        conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


class Stack:
    """Sim IOC, monitor, worker and daphne of the benchmark, all stopped by ``close``."""

    def __init__(self, devices: int) -> None:
        from bench.common import free_port

        self.devices = devices
        self.prefix = f"LOAD{os.getpid()}"
        self.ca_port = free_port()
        self.web_port = free_port()
        self.env = {
            **os.environ,
            "EPICS_CA_SERVER_PORT": str(self.ca_port),
            "EPICS_CA_REPEATER_PORT": str(free_port()),
        }
        os.environ.update(
            {k: self.env[k] for k in ("EPICS_CA_SERVER_PORT", "EPICS_CA_REPEATER_PORT")}
        )
        self.procs: list[Any] = []
        self.ioc = self.monitor = self.worker = self.web = None

    def _proc(self, name: str, args: list[str]) -> Any:
        from bench.common import Proc

        proc = Proc(name, args, self.env)
        self.procs.append(proc)
        return proc

    def start(self) -> Stack:
        py = sys.executable
        celery = str(Path(py).with_name("celery"))
        from squirrel.limits import DAPHNE_OPTIONS

        daphne = str(Path(py).with_name("daphne"))
        self.ioc = self._proc(
            "sim_ioc",
            [
                py,
                "manage.py",
                "sim_ioc",
                "--count",
                str(self.devices),
                "--prefix",
                self.prefix,
                "--port",
                str(self.ca_port),
            ],
        )
        self.ioc.wait_for("sim_ioc ready", 180)
        self.monitor = self._proc("monitor", [py, "manage.py", "monitor"])
        self.worker = self._proc(
            "worker",
            [
                celery,
                "-A",
                "squirrel",
                "worker",
                "--loglevel",
                "info",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
            ],
        )
        self.worker.wait_for(" ready.", 60)
        self.web = self._proc(
            "web",
            [
                daphne,
                "-b",
                "127.0.0.1",
                "-p",
                str(self.web_port),
                *DAPHNE_OPTIONS,
                "squirrel.asgi:application",
            ],  # fmt: skip
        )
        deadline = time.monotonic() + 30
        while self.get("/health")[0] != 200:
            if time.monotonic() > deadline or self.web.proc.poll() is not None:
                raise RuntimeError("daphne did not answer:\n" + "".join(self.web.lines[-30:]))
            time.sleep(0.2)
        return self

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["X-API-Key"] = key
        try:
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError:
            return 0, None
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def _catalog(devices: list[Any]) -> None:
    """Replace the catalog with ``devices`` (setpoint + readback each)."""
    from django.db import connection

    from pvs.models import PV

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE snapshot_value, snapshot, job, pv_tag, pv CASCADE")
    PV.objects.bulk_create(
        [
            PV(setpoint_address=d.setpoint, readback_address=d.readback, device=d.name)
            for d in devices
        ],
        batch_size=5000,
    )


def _write_key() -> str:
    from squirrel import services

    return services.api_key_create(
        app_name=f"bench-load-{os.getpid()}-{time.time_ns()}", read_access=True, write_access=True
    ).token


class Captures(threading.Thread):
    """One capture job after another through the API while the load runs (the worker)."""

    def __init__(self, stack: Stack, key: str, stop: threading.Event) -> None:
        super().__init__(name="captures", daemon=True)
        self.stack, self.key, self.stop_event = stack, key, stop
        self.durations: list[float] = []
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            status, body = self.stack.call(
                "POST", "/v1/snapshots", {"title": "load", "comment": "bench/load.py"}, self.key
            )
            if status != 200:
                self.problems.append(f"POST /v1/snapshots: {status} {str(body)[:200]}")
                self.stop_event.wait(2)
                continue
            job_id = body["payload"]["jobId"]
            job: dict[str, Any] = {}
            while time.monotonic() - started < 120:
                status, body = self.stack.get(f"/v1/jobs/{job_id}")
                job = body.get("payload") or {} if status == 200 else {}
                if job.get("status") in ("completed", "failed"):
                    break
                time.sleep(0.2)
            if job.get("status") == "completed":
                self.durations.append(time.monotonic() - started)
            else:
                self.problems.append(f"job {job_id}: {job or status}")
            self.stop_event.wait(3)


class MonitorWatch(threading.Thread):
    """The monitor's heartbeat age every 0.25 s, and ``check_added``: a PV added to the catalog
    during the load is subscribed and cached by the monitor."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(name="monitor-watch", daemon=True)
        self.stop_event = stop
        self.max_age = 0.0
        self.missing = 0

    def run(self) -> None:
        from monitor.cache import liveness_read

        while not self.stop_event.is_set():
            age = liveness_read().oldest_age
            if age is None:
                self.missing += 1
            else:
                self.max_age = max(self.max_age, age)
            self.stop_event.wait(0.25)


def _cached(address: str) -> bool:
    from monitor.cache import values_read

    entry = values_read([address]).get(address)
    return bool(entry and entry.get("connected"))


def bench(args: argparse.Namespace) -> int:
    _setup_env()
    _ensure_database(os.environ["SQUIRREL_DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from monitor import events, sim

    call_command("migrate", verbosity=0)
    devices = sim.sim_devices(count=args.devices, prefix=f"LOAD{os.getpid()}")
    held_back = devices[-1]
    _catalog(devices[:-1])
    addresses = [a for d in devices[:-1] for a in (d.setpoint, d.readback) if a]
    key = _write_key()
    pool = settings.DB_POOL_MAX_SIZE
    db = settings.DATABASES["default"]
    print(
        f"web settings: SQUIRREL_DB_POOL_MAX_SIZE={pool} "
        f"(min {settings.DB_POOL_MIN_SIZE}, timeout {settings.DB_POOL_TIMEOUT} s), "
        f"CONN_MAX_AGE={db['CONN_MAX_AGE']}; catalog {len(addresses)} channels",
        flush=True,
    )
    stack = Stack(args.devices)
    rds = events.sync_redis()
    failed: list[str] = []
    try:
        t0 = time.monotonic()
        stack.start()
        while rds.hlen(events.values_hash()) < len(addresses):
            if time.monotonic() - t0 > 180:
                raise RuntimeError(
                    "the monitor did not fill the cache:\n" + "".join(stack.monitor.lines[-30:])
                )
            time.sleep(0.2)
        print(f"stack up, cache filled in {time.monotonic() - t0:.1f} s", flush=True)
        status, body = stack.call(
            "POST", "/v1/snapshots?async=false", {"title": "first", "comment": "bench"}, key
        )
        assert status == 200, (status, body)
        snapshot_id = body["payload"]["id"]
        status, body = stack.call("POST", "/v1/snapshots", {"title": "job", "comment": "b"}, key)
        job_id = body["payload"]["jobId"]
        live = random.Random(1).sample(addresses, min(200, len(addresses)))
        mix = [
            Call(20, "GET", "/v1/pvs/paged?pvName=&pageSize=100", follow=True),
            Call(5, "GET", "/v1/pvs/paged?pvName=DEV1&pageSize=100"),
            Call(10, "GET", "/v1/snapshots"),
            Call(5, "GET", f"/v1/snapshots/{snapshot_id}?limit=100"),
            Call(10, "GET", f"/v1/jobs/{job_id}"),
            Call(15, "GET", "/v1/health/heartbeat"),
            Call(5, "GET", "/v1/health/summary"),
            Call(5, "GET", "/health"),
            Call(5, "GET", "/v1/tags"),
            Call(15, "POST", "/v1/pvs/live", {"pv_names": live}),
            Call(5, "GET", "/v1/pvs/live?" + "&".join(f"pv_names={a}" for a in live[:20])),
        ]
        subscriptions = [
            [addresses[(i * 100 + j) % len(addresses)] for j in range(100)] for i in range(args.ws)
        ]
        sampler = Sampler(stack_dsn(), stack.web.proc.pid)
        rss_start = rss_mb(stack.web.proc.pid)
        web_before, _ = sampler.now()
        stop = threading.Event()
        captures, watch = Captures(stack, key, stop), MonitorWatch(stop)
        sampler.start()
        captures.start()
        watch.start()
        adder = threading.Timer(
            args.seconds / 2,
            lambda: added.append(
                stack.call(
                    "POST",
                    "/v1/pvs",
                    {"setpointAddress": held_back.setpoint, "description": "load"},
                    key,
                )[0]
            ),
        )
        added: list[int] = []
        adder.start()
        print(
            f"load: {args.rest} REST clients, {args.ws} WebSocket clients x 100 PVs, "
            f"{args.seconds:.0f} s",
            flush=True,
        )
        rest, ws = run_clients(
            host="127.0.0.1",
            port=stack.web_port,
            mix=mix,
            rest=args.rest,
            subscriptions=subscriptions,
            seconds=args.seconds,
        )
        deadline = time.monotonic() + 20
        while not _cached(held_back.setpoint) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        captures.join(130)
        watch.join(5)
        sampler.stop()
        time.sleep(5)
        web_idle, server_idle = sampler.now()
        five = sum(rest.server_errors.values())
        print(f"REST: {rest_text(rest)}")
        for path, n in rest.server_errors.most_common(5):
            print(f"  5xx {path}: {n}")
        for sample in rest.samples[:5]:
            print(f"  e.g. {sample}")
        print(f"WebSocket: {ws_text(ws)}")
        for sample in ws.samples[:3]:
            print(f"  e.g. {sample}")
        print(
            f"PostgreSQL connections of the web process: max {sampler.web_max} during the load "
            f"(bound SQUIRREL_DB_POOL_MAX_SIZE={pool or 'none'}), {web_before} before, "
            f"{web_idle} after 5 s idle; whole server max {sampler.server_max}, "
            f"{server_idle} after (max_connections {server_max_connections()}); "
            f"{sampler.samples} samples"
        )
        print(
            f"daphne RSS: {rss_start:.0f} MB at start, max {sampler.rss_max:.0f} MB, "
            f"{rss_mb(stack.web.proc.pid):.0f} MB at the end"
        )
        slowest = max(captures.durations, default=float("nan"))
        print(
            f"worker: {len(captures.durations)} capture jobs completed during the load "
            f"(slowest {slowest:.1f} s), {len(captures.problems)} problems "
            f"{captures.problems[:3] or ''}"
        )
        print(
            f"monitor: heartbeat age max {watch.max_age:.2f} s "
            f"(alive below {settings.MONITOR_ALIVE_SECONDS} s), missing {watch.missing} times; "
            f"PV added mid-way (POST {added[0] if added else 'not sent'}) cached: "
            f"{_cached(held_back.setpoint)}"
        )
        if five or rest.failures or ws.failures:
            failed.append("server errors or failed requests")
        if ws.subscribed < args.ws:
            failed.append("WebSocket clients not all subscribed")
        if pool and sampler.web_max > pool:
            failed.append(f"web process held {sampler.web_max} connections > {pool}")
        if not pool:
            failed.append("no pool: the web process's connections are not bounded")
        if not captures.durations or captures.problems:
            failed.append("capture jobs did not all complete")
        if watch.max_age >= settings.MONITOR_ALIVE_SECONDS or watch.missing:
            failed.append("the monitor's heartbeat went stale")
        if not _cached(held_back.setpoint):
            failed.append("the PV added during the load was not cached by the monitor")
    finally:
        stack.close()
        keys = list(rds.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=10_000))
        for start in range(0, len(keys), 5000):
            rds.delete(*keys[start : start + 5000])
    print("checks: " + ("all passed" if not failed else "FAILED: " + "; ".join(failed)))
    return 1 if failed else 0


def stack_dsn() -> str:
    """The benchmark database's server, as a libpq URL (for pg_stat_activity)."""
    return os.environ["SQUIRREL_DATABASE_URL"]


def server_max_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rest", type=int, default=100, help="concurrent REST clients")
    parser.add_argument("--ws", type=int, default=50, help="WebSocket clients")
    parser.add_argument("--devices", type=int, default=2000, help="simulated devices")
    sys.exit(bench(parser.parse_args()))


if __name__ == "__main__":
    main()

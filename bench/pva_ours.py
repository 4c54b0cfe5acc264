"""Our half of ``bench/pva.py``: the same figures through Squirrel (run by ``bench/pva.py``).

On the database of ``SQUIRREL_DATABASE_URL`` (default ``squirrel_pva``, replaced catalog) and a
private Redis prefix:

1. catalog = every sim device as ``pva://`` rows; ``manage.py monitor`` started: seconds until
   every PVA value is in Redis and connected; then CPU % of one core and RSS of the monitor
   over 10 s of ~5K updates/s;
2. our direct read of every channel (``monitor.bridge.read``);
3. our put with completion of the analog setpoints, then a read-back verifying each
   (``monitor.bridge``: what a restore's write and verify phases call), beside the bare put;
4. catalog = the devices split CA / PVA (``sim.is_pva``, half each), monitor restarted, one
   celery worker: POST /v1/snapshots from cache -> job completed, median of 3.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import Proc

PYTHON_ENV = {"PYTHONUNBUFFERED": "1"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _catalog(devices: list[Any], share: float) -> int:
    from django.db import connection

    from monitor import sim
    from pvs.models import PV

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE snapshot_value, snapshot, job, pv_tag, pv CASCADE")
    rows = []
    for d in devices:
        scheme = "pva://" if sim.is_pva(d.index, share) else ""
        rows.append(
            PV(
                setpoint_address=scheme + d.setpoint if d.setpoint else None,
                readback_address=scheme + d.readback,
                device=d.name,
            )
        )
    PV.objects.bulk_create(rows, batch_size=5000)
    return sum(d.channels for d in devices)


def _fill(redis: Any, channels: int, started: float, limit: float = 180.0) -> float:
    from monitor import events

    while time.monotonic() - started < limit:
        if (
            redis.hlen(events.values_hash()) >= channels
            and redis.scard(events.disconnected_set()) == 0
        ):
            return time.monotonic() - started
        time.sleep(0.05)
    return float("nan")


def _clear(redis: Any) -> None:
    from django.conf import settings

    keys = list(redis.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=10_000))
    for start in range(0, len(keys), 5000):
        redis.delete(*keys[start : start + 5000])


def ours(*, env: dict[str, str], files: dict[str, Path], devices: int, prefix: str) -> None:
    os.environ.update(env)
    os.environ.setdefault("SQUIRREL_REDIS_PREFIX", f"bench-pva-{os.urandom(3).hex()}:")
    os.environ.setdefault("SQUIRREL_DATABASE_URL", "postgresql://root@127.0.0.1:5432/squirrel_pva")
    os.environ.setdefault("SQUIRREL_ANONYMOUS_ACCESS", "write")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
    from bench.snapshot import ensure_database

    ensure_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.common import vacuum
    from monitor import bridge, events, sim

    call_command("migrate", verbosity=0)
    devs = sim.sim_devices(count=devices, prefix=prefix)
    channels = _catalog(devs, 1.0)
    vacuum()
    redis = events.sync_redis()
    child_env = {**os.environ, **PYTHON_ENV}
    procs: list[Proc] = []
    try:
        started = time.monotonic()
        monitor = Proc("monitor", [PYTHON, "manage.py", "monitor"], child_env)
        procs.append(monitor)
        fill = _fill(redis, channels, started)
        print(f"ours: monitor start -> all {channels} PVA values in Redis: {fill:.1f} s"
              " (goal <= 10 s)", flush=True)  # fmt: skip
        time.sleep(2)
        pid = monitor.proc.pid
        cpu, wall = _cpu_seconds(pid), time.monotonic()
        time.sleep(10)
        cpu_pct = 100 * (_cpu_seconds(pid) - cpu) / (time.monotonic() - wall)
        print(f"ours: monitor at ~5K updates/s: CPU {cpu_pct:.1f} % of a core (goal <= 25 %),"
              f" RSS {_rss_mb(pid):.0f} MB (goal <= 800 MB)", flush=True)  # fmt: skip
        monitor.stop()
        procs.remove(monitor)

        names = ["pva://" + n for n in files["all"].read_text().split()]
        reads = []
        for _ in range(3):
            t = time.monotonic()
            got = bridge.read(names, settings.EPICS_TIMEOUT)
            reads.append(time.monotonic() - t)
        ok = sum(1 for e in got.values() if e.get("connected"))
        print(f"ours: direct read of {len(names)} PVA channels: median"
              f" {statistics.median(reads):.2f} s ({ok} ok)", flush=True)  # fmt: skip

        setpoints = ["pva://" + n for n in files["analog"].read_text().split()]
        puts, verifies = [], []
        with bridge.Bridge() as b:
            for run in range(3):
                value = 2.5 + run
                t = time.monotonic()
                results = b.write(dict.fromkeys(setpoints, value), settings.EPICS_TIMEOUT)
                puts.append(time.monotonic() - t)
                back = b.read(setpoints, settings.EPICS_TIMEOUT)
                verifies.append(time.monotonic() - t)
                good = sum(1 for n in setpoints if results[n].ok and back[n].get("value") == value)
        print(f"ours: put with completion of {len(setpoints)} PVA setpoints: median"
              f" {statistics.median(puts):.2f} s; with read-back verify"
              f" {statistics.median(verifies):.2f} s ({good} verified)", flush=True)  # fmt: skip

        _clear(redis)
        mixed = _catalog(devs, 0.5)
        vacuum()
        started = time.monotonic()
        procs.append(Proc("monitor", [PYTHON, "manage.py", "monitor"], child_env))
        fill = _fill(redis, mixed, started)
        print(f"ours: mixed catalog (half CA, half PVA rows): {mixed} values in Redis after"
              f" {fill:.1f} s", flush=True)  # fmt: skip
        import bench.snapshot as snap

        worker = Proc(
            "worker",
            [str(Path(PYTHON).with_name("celery")), "-A", "squirrel", "worker", "--pool", "solo",
             "--loglevel", "warning", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            child_env,
        )  # fmt: skip
        procs.append(worker)
        snap.WORKER_PID = worker.proc.pid
        time.sleep(4)
        snap.post_and_wait(True)  # warm up
        times = [snap.post_and_wait(True)[0] for _ in range(3)]
        snap.report(f"ours: snapshot from cache, {len(devs)} mixed rows", times,
                    "goal <= 1.0 s")  # fmt: skip
    finally:
        for proc in reversed(procs):
            proc.stop()
        _clear(redis)


PYTHON = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python")

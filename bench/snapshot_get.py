"""GET /v1/snapshots/{id} of a 50K-value snapshot over HTTP: time and web-process memory.

    .venv/bin/python bench/snapshot_get.py [--count 50000] [--repeat 3]

``run(base_url, pid=None)`` seeds a snapshot of ``count`` PVs (setpoint + readback each, a
mix of floats, ints, enums, strings and waveforms, some tagged) with COPY through
``snapshots.storage.snapshot_values_write`` into whatever database Django is configured with,
then times the full GET (body read and parsed-checked) against ``base_url``: median of
``repeat``. With ``pid`` (the web process) it reports its RSS (VmRSS) and peak (VmHWM)
before and after, from /proc/<pid>/status.

It also renders the snapshot's admin change page in-process (page 250 of 500 of values).

``__main__`` uses its own database ``squirrel_bench4`` (created and migrated if missing),
starts ``daphne squirrel.asgi:application`` on a free loopback port, runs, and stops daphne.
Goal: median <= 1.5 s, RSS growth bounded (no 50K rows held at once).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import free_port, start_daphne, vacuum  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BENCH_DB = "squirrel_bench4"


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def seed(count: int) -> tuple[str, float]:
    """A snapshot of ``count`` PVs written with COPY; (its id, seconds the write took)."""
    import django

    django.setup()
    from django.db import transaction

    from pvs.models import PV
    from snapshots.models import Snapshot, ValueSource
    from snapshots.storage import CapturedValue, snapshot_values_write
    from tags.models import Tag, TagGroup

    Snapshot.objects.filter(title__startswith="bench4 ").delete()
    PV.objects.filter(setpoint_address__startswith="BENCH4:").delete()
    vacuum()
    group, _ = TagGroup.objects.get_or_create(name="Bench4 area")
    tags = [Tag.objects.get_or_create(name=f"A{i}", group=group)[0] for i in range(10)]
    pvs = PV.objects.bulk_create(
        PV(setpoint_address=f"BENCH4:{i:06d}", readback_address=f"BENCH4:{i:06d}:RBV")
        for i in range(count)
    )
    through = PV.tags.through
    through.objects.bulk_create(
        through(pv_id=pv.pk, tag_id=tags[i % 10].pk) for i, pv in enumerate(pvs) if i % 2 == 0
    )
    now = time.time()
    meta = {"units": "mA", "precision": 3, "upper_ctrl_limit": 100.0, "lower_ctrl_limit": 0.0}
    enum_meta = {"enum_strs": ["Off", "On", "Fault"]}

    def entry(i: int, rb: bool) -> dict[str, Any]:
        base: dict[str, Any] = {
            "connected": True,
            "updated_at": now,
            "status": 0,
            "severity": 0,
            "timestamp": now - i * 1e-3,
        }
        kind = i % 10
        if kind == 7:
            base.update(value=["Off", "On", "Fault"][i % 3], index=i % 3, **enum_meta)
        elif kind == 8:
            base.update(value=[float(i + k) for k in range(8)], **meta)
        elif kind == 9:
            base.update(value=f"text {i}")
        elif kind == 6:
            base.update(value=i, **meta)
        else:
            base.update(value=i * 0.001 + (0.5 if rb else 0.0), **meta)
        return base

    rows = [
        CapturedValue(
            pv_id=pv.pk,
            pv_name=pv.setpoint_address,
            setpoint_address=pv.setpoint_address,
            readback_address=pv.readback_address,
            setpoint=entry(i, False),
            readback=entry(i, True),
            sp_source=ValueSource.CACHE,
            rb_source=ValueSource.CACHE,
            sp_age=0.05,
            rb_age=0.05,
        )
        for i, pv in enumerate(pvs)
    ]
    started = time.perf_counter()
    with transaction.atomic():
        snapshot = Snapshot.objects.create(title=f"bench4 {count}", pv_count=count)
        snapshot_values_write(snapshot=snapshot, values=rows)
    return str(snapshot.pk), time.perf_counter() - started


def timed_get(base_url: str, path: str) -> tuple[float, int, int]:
    """(seconds for the whole body, bytes, number of pvValues)."""
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, len(body), len(json.loads(body)["payload"]["pvValues"])


def run(
    base_url: str, *, pid: int | None = None, count: int = 50_000, repeat: int = 3
) -> dict[str, Any]:
    """Seed a ``count``-value snapshot and time GET /v1/snapshots/{id} against ``base_url``."""
    snapshot_id, write_seconds = seed(count)
    result: dict[str, Any] = {"count": count, "copy_write_s": round(write_seconds, 3)}
    if pid is not None:
        result["rss_before_mb"] = proc_memory_mb(pid)
    times = []
    for _ in range(repeat):
        seconds, size, rows = timed_get(base_url, f"/v1/snapshots/{snapshot_id}")
        if rows != count:
            raise RuntimeError(f"expected {count} values, got {rows}")
        times.append(seconds)
    result.update(
        get_median_s=round(statistics.median(times), 3),
        get_times_s=[round(t, 3) for t in times],
        body_mb=round(size / 1e6, 1),
        goal_s=1.5,
    )
    if pid is not None:
        result["rss_after_mb"] = proc_memory_mb(pid)
    middle = count // 2
    page, _, rows = timed_get(base_url, f"/v1/snapshots/{snapshot_id}?limit=100&offset={middle}")
    result["get_page_of_100_s"] = round(page, 3)
    result["admin_change_page_s"] = round(admin_page_seconds(snapshot_id, count), 3)
    return result


def admin_page_seconds(snapshot_id: str, count: int) -> float:
    """The snapshot's admin change page (a page of values from the middle), rendered
    in-process for a superuser. Goal: < 2 s at 50K values."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from snapshots.admin import VALUES_PER_PAGE

    pages = max(1, math.ceil(count / VALUES_PER_PAGE))
    middle = max(1, pages // 2)

    user, _ = get_user_model().objects.get_or_create(
        username="bench4-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    started = time.perf_counter()
    response = client.get(f"/admin/snapshots/snapshot/{snapshot_id}/change/?vpage={middle}")
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or f"page {middle} of {pages}".encode() not in response.content:
        raise RuntimeError(f"admin page: {response.status_code}, not page {middle} of {pages}")
    return elapsed


def _ensure_database(url: str) -> None:
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0", "--noinput"], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"
    os.environ["SQUIRREL_DATABASE_URL"] = url
    os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench")
    os.environ.setdefault("SQUIRREL_ANONYMOUS_ACCESS", "read")
    os.environ.setdefault("SQUIRREL_REDIS_PREFIX", "squirrel-bench4:")
    _ensure_database(url)
    port = free_port()
    daphne = start_daphne(port)
    try:
        result = run(
            f"http://127.0.0.1:{port}", pid=daphne.pid, count=args.count, repeat=args.repeat
        )
    finally:
        daphne.terminate()
        try:
            daphne.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()

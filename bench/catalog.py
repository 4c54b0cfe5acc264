"""Catalog benchmark: import 50K PVs from CSV, then page through them over real HTTP.

Run by hand: ``.venv/bin/python bench/catalog.py [--rows 50000] [--walks 5]``. It uses its own
database ``squirrel_bench`` (created and migrated when missing), replaces its PV catalog,
starts ``daphne squirrel.asgi:application`` on a free loopback port, prints figures, and
stops daphne at the end. Goals: import ≤ 10 s; ``GET /v1/pvs/paged?pageSize=1000`` ≤ 50 ms
median per page and ≤ 2.5 s for a full walk. When ``bench/snapshot_get.py`` exists, its
``run(base_url) -> dict`` is called last against the same server.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, start_daphne  # noqa: E402

DATABASE = "squirrel_bench"
BASE_DB_URL = "postgresql://postgres@127.0.0.1:5432"

ENV = {
    "SQUIRREL_DATABASE_URL": f"{BASE_DB_URL}/{DATABASE}",
    "SQUIRREL_SECRET_KEY": os.environ.get("SQUIRREL_SECRET_KEY", "bench-only-not-a-secret"),
    "SQUIRREL_REDIS_PREFIX": "squirrel-bench:",
    "SQUIRREL_ANONYMOUS_ACCESS": "read",
    "SQUIRREL_LOG_LEVEL": "WARNING",
    "EPICS_CA_ADDR_LIST": "127.0.0.1",
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
PYTHON = str(ROOT / ".venv" / "bin" / "python")
GROUPS = {"Area": 40, "Subsystem": 12, "Kind": 6}


def ensure_database() -> None:
    import psycopg

    with psycopg.connect(f"{BASE_DB_URL}/postgres", autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'create database "{DATABASE}"')
            print(f"created database {DATABASE}")
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0", "--noinput"], cwd=ROOT, check=True)


def reset_catalog() -> None:
    import django

    django.setup()
    from pvs.models import PV
    from tags.models import TagGroup

    PV.objects.all().delete()
    TagGroup.objects.all().delete()


def write_csv(path: Path, rows: int) -> None:
    """``rows`` PVs with three tag-group columns; one PV in three has two Subsystem tags."""
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["Setpoint", "Readback", "Description", "Device", "AbsTolerance", *GROUPS])
        for i in range(rows):
            device = f"DEV{i // 50:04d}"
            subsystems = {f"S{i % 12}"} | ({f"S{(i * 7) % 12}"} if i % 3 == 0 else set())
            writer.writerow(
                [
                    f"BENCH:{device}:SP{i:05d}",
                    f"BENCH:{device}:RB{i:05d}",
                    f"benchmark PV {i}",
                    device,
                    "0.01" if i % 2 else "",
                    f"A{i % 40}",
                    ", ".join(sorted(subsystems)),
                    "" if i % 5 == 0 else f"K{i % 6}",
                ]
            )


def timed_import(path: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [PYTHON, "manage.py", "import_pvs", str(path), "--no-progress", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started, done.stdout.strip()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, Any]:
    started = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed, json.loads(body)["payload"]


def walk(conn: http.client.HTTPConnection, query: str = "") -> tuple[list[float], int, float]:
    """Every page of pageSize=1000; returns per-page times, rows seen and wall time."""
    times: list[float] = []
    rows = 0
    token = None
    started = time.perf_counter()
    while True:
        path = f"/v1/pvs/paged?pageSize=1000{query}"
        if token:
            path += f"&continuationToken={token}"
        elapsed, page = get(conn, path)
        times.append(elapsed)
        rows += len(page["results"])
        token = page["continuationToken"]
        if not token:
            return times, rows, time.perf_counter() - started


def load() -> str:
    """The 1/5/15-minute load averages: figures from a busy machine are not comparable."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def bench_paging(port: int, walks: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    walk(conn)  # warm up connections and caches
    page_times: list[float] = []
    walk_times: list[float] = []
    rows = 0
    for _ in range(walks):
        times, rows, wall = walk(conn)
        page_times.extend(times)
        walk_times.append(wall)
    print(f"  paged pageSize=1000: {len(page_times)} pages over {walks} walks of {rows} rows")
    print(
        f"    per page: median {ms(statistics.median(page_times))}, "
        f"p90 {ms(statistics.quantiles(page_times, n=10)[-1])}, max {ms(max(page_times))} "
        "(goal: median <= 50 ms)"
    )
    print(
        f"    full walk: median {statistics.median(walk_times):.2f} s, "
        f"max {max(walk_times):.2f} s (goal <= 2.5 s)"
    )
    _, groups = get(conn, "/v1/tags")
    area = next(g for g in groups if g["name"] == "Area")
    _, detail = get(conn, f"/v1/tags/{area['id']}")
    tag_filter = json.dumps({area["id"]: [t["id"] for t in detail[0]["tags"][:2]]})
    extra = {}
    for label, query in (
        ("pvName=DEV0042", "&pvName=DEV0042"),
        ("pvName=benchmark (matches all)", "&pvName=benchmark"),
        (
            "tagFilters (2 of 40 Area tags)",
            "&tagFilters=" + quote(tag_filter),
        ),
    ):
        times, found, wall = walk(conn, query)
        extra[label] = (statistics.median(times), found, wall)
        print(
            f"    {label}: {found} rows, {len(times)} pages, median page "
            f"{ms(statistics.median(times))}, walk {wall:.2f} s"
        )
    conn.close()
    return {
        "page_median_s": statistics.median(page_times),
        "walk_median_s": statistics.median(walk_times),
        "rows": rows,
        "filters": extra,
    }


def bench_import(rows: int) -> None:
    reset_catalog()
    with tempfile.TemporaryDirectory(prefix="squirrel-bench-") as tmp:
        path = Path(tmp) / "catalog.csv"
        write_csv(path, rows)
        print(f"catalog benchmark: {rows} PVs, tag groups {GROUPS}")
        seconds, report = timed_import(path)
        print(f"  import_pvs (new catalog): {seconds:.2f} s wall incl. startup (goal <= 10 s)")
        print(f"    {report}")
        seconds, report = timed_import(path)
        print(f"  import_pvs again (idempotent): {seconds:.2f} s wall")
        print(f"    {report}")
        seconds, report = timed_import(path, "--dry-run")
        print(f"  import_pvs --dry-run: {seconds:.2f} s wall")
        export = Path(tmp) / "export.csv"
        started = time.perf_counter()
        subprocess.run(
            [PYTHON, "manage.py", "export_pvs", str(export)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        print(f"  export_pvs: {time.perf_counter() - started:.2f} s wall")


def bench_in_process(walks: int) -> None:
    """The same walk through Django's test client, no HTTP server: what the view costs."""
    import django

    django.setup()
    from rest_framework.test import APIClient

    client = APIClient()

    def one_walk() -> tuple[list[float], float]:
        times: list[float] = []
        token = None
        started = time.perf_counter()
        while True:
            path = "/v1/pvs/paged?pageSize=1000"
            if token:
                path += f"&continuationToken={token}"
            begun = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - begun)
            token = json.loads(response.content)["payload"]["continuationToken"]
            if not token:
                return times, time.perf_counter() - started

    one_walk()
    page_times: list[float] = []
    walk_times: list[float] = []
    for _ in range(walks):
        times, wall = one_walk()
        page_times.extend(times)
        walk_times.append(wall)
    print(
        f"  in-process (test client, no HTTP): median page {ms(statistics.median(page_times))}, "
        f"p90 {ms(statistics.quantiles(page_times, n=10)[-1])}, "
        f"median walk {statistics.median(walk_times):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--walks", type=int, default=5)
    parser.add_argument(
        "--no-import", action="store_true", help="keep the catalog as it is; only time HTTP"
    )
    args = parser.parse_args()

    ensure_database()
    print(f"load average before: {load()} ({os.cpu_count()} CPUs)")
    if not args.no_import:
        bench_import(args.rows)
    port = free_port()
    daphne = start_daphne(port)
    try:
        print(f"  daphne on 127.0.0.1:{port}")
        bench_paging(port, args.walks)
        bench_in_process(args.walks)
        try:
            snapshot_get = importlib.import_module("bench.snapshot_get")
        except ModuleNotFoundError:
            snapshot_get = None
        if snapshot_get is not None:
            print("snapshot GET benchmark (bench.snapshot_get):")
            for key, value in snapshot_get.run(f"http://127.0.0.1:{port}").items():
                print(f"  {key}: {value}")
        print(f"load average after: {load()}")
    finally:
        daphne.terminate()
        try:
            daphne.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait()


if __name__ == "__main__":
    main()

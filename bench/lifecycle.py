"""Snapshot lifecycle benchmark (issue 17), by hand: prints figures, medians.

    .venv/bin/python bench/lifecycle.py [--repeat 5] [--reseed]

On its own database (``squirrel_bench17`` unless SQUIRREL_DATABASE_URL is set), seeded once
(``--reseed`` again) with 10,000 snapshots of 1K values and 50 of 50K values (12.5M value
rows, generated inside PostgreSQL), labels on every 10th, titles and comments to search.
Then it measures, in this process (Django's test client, so each figure includes the request):

1. GET /v1/snapshots?labels=shift&createdAfter=..&createdBefore=..&search=quad   goal <= 100 ms
2. GET /v1/pvs/{id}/history (a PV saved in all 10,050 snapshots; limit 100, 1000) goal <= 200 ms
3. deleting a 50K-value snapshot (services.snapshot_delete) while another thread writes
   50K-value snapshots as a capture does (one transaction, COPY)                    goal <= 1 s
4. the retention sweep deleting 1,000 snapshots of 1K values                        goal <= 30 s

Deleted snapshots are put back (re-seeded) at the start of the next run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault(
    "SQUIRREL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/squirrel_bench17"
)
os.environ.setdefault("SQUIRREL_REDIS_PREFIX", "squirrel-bench17:")
os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench")
os.environ.setdefault("SQUIRREL_ANONYMOUS_ACCESS", "write")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")

from bench.snapshot import ensure_database  # noqa: E402

SMALL, SMALL_VALUES, BIG, BIG_VALUES = 10_000, 1_000, 50, 50_000
SWEEP = 1_000


def _seed_snapshots(cursor, *, count: int, values: int, tag: str) -> None:
    """``count`` snapshots of ``values`` values each (the first ``values`` PVs), generated
    by PostgreSQL: titles 'run N', every 10th labelled 'shift', one a day-ish apart."""
    cursor.execute(
        "INSERT INTO snapshot (id, created_at, updated_at, title, description, created_by,"
        " kind, pv_count, live_count, stale_count, reread_count, failed_count, labels,"
        " metadata)"
        " SELECT gen_random_uuid(), now() - (n || ' minutes')::interval * 50, now(),"
        " %s || ' run ' || n, CASE WHEN n %% 7 = 0 THEN 'tuning the quad ' || n"
        " ELSE 'routine' END, CASE WHEN n %% 3 = 0 THEN 'ann' ELSE 'bob' END,"
        " 'snapshot', %s, %s, 0, 0, 0,"
        " CASE WHEN n %% 10 = 0 THEN ARRAY['shift'] ELSE ARRAY[]::varchar[] END, '{}'::jsonb"
        " FROM generate_series(1, %s) n",
        [tag, values, values, count],
    )
    cursor.execute(
        "INSERT INTO snapshot_value (snapshot_id, pv_id, pv_name, setpoint_address,"
        " sp_kind, sp_num, sp_source, sp_connected)"
        " SELECT s.id, p.id, p.setpoint_address, p.setpoint_address, 1, p.n, 1, true"
        " FROM snapshot s CROSS JOIN (SELECT id, setpoint_address,"
        "   row_number() OVER (ORDER BY setpoint_address) AS n FROM pv) p"
        " WHERE s.title LIKE %s AND p.n <= %s",
        [tag + " run %", values],
    )


def seed(reseed: bool) -> None:
    from django.db import connection

    from bench.common import vacuum
    from pvs.models import PV
    from snapshots.models import Snapshot

    small = Snapshot.objects.filter(title__startswith="small run ").count()
    big = Snapshot.objects.filter(title__startswith="big run ").count()
    if not reseed and small == SMALL and big == BIG:
        print(f"seed: kept ({small} + {big} snapshots)")
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE snapshot_value, snapshot, snapshot_schedule CASCADE")
    if PV.objects.count() != BIG_VALUES:
        PV.objects.all().delete()
        PV.objects.bulk_create(
            (PV(setpoint_address=f"BENCH:{i:05d}:SP") for i in range(BIG_VALUES)),
            batch_size=5000,
        )
    with connection.cursor() as cursor:
        _seed_snapshots(cursor, count=SMALL, values=SMALL_VALUES, tag="small")
        _seed_snapshots(cursor, count=BIG, values=BIG_VALUES, tag="big")
    vacuum()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE snapshot, snapshot_value, pv")
    print(f"seed: {SMALL} x {SMALL_VALUES} + {BIG} x {BIG_VALUES} values in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def show(name: str, samples: list[float], goal: float) -> None:
    median = statistics.median(samples)
    verdict = "ok" if median <= goal else "OVER"
    runs = ", ".join(f"{s * 1000:.0f}" for s in samples)
    print(f"{name}: median {median * 1000:.0f} ms (goal {goal * 1000:.0f} ms, {verdict}) [{runs}]")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    ensure_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import close_old_connections, transaction
    from django.test import Client
    from django.utils import timezone

    from pvs.models import PV
    from snapshots import schedules, services
    from snapshots.capture import Completeness, snapshot_store
    from snapshots.models import Snapshot
    from snapshots.storage import CapturedValue

    call_command("migrate", "--noinput", verbosity=0)
    seed(args.reseed)
    client = Client()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    # 1. the filtered list
    after = (timezone.now() - timedelta(days=200)).isoformat()
    before = (timezone.now() - timedelta(days=20)).isoformat()
    query = {"labels": "shift", "createdAfter": after, "createdBefore": before, "search": "quad"}

    def listing() -> None:
        response = client.get("/v1/snapshots", query)
        assert response.status_code == 200, response.content[:300]

    listing()
    count = len(client.get("/v1/snapshots", query).json()["payload"])
    show(f"1. filtered list (labels+dates+search, {count} found)", timed(listing, args.repeat),
         0.100)  # fmt: skip

    # 2. a PV's history across every snapshot
    pv = PV.objects.order_by("setpoint_address").first()
    assert pv is not None
    for limit in (100, 1000):

        def history(limit: int = limit) -> None:
            response = client.get(f"/v1/pvs/{pv.pk}/history", {"limit": limit})
            assert response.status_code == 200 and len(response.json()["payload"]) == limit

        history()
        show(f"2. PV history (limit {limit}, of {SMALL + BIG})", timed(history, args.repeat),
             0.200)  # fmt: skip

    # 3. delete a 50K snapshot while a capture writes
    rows = [
        CapturedValue(pv_id=str(p), pv_name=a, setpoint_address=a,
                      setpoint={"value": 1.0, "connected": True}, sp_source=1, sp_age=0.0)
        for p, a in PV.objects.values_list("pk", "setpoint_address")
    ]  # fmt: skip
    stop = threading.Event()
    captures: list[float] = []

    def capture_loop() -> None:
        try:
            while not stop.is_set():
                started = time.perf_counter()
                with transaction.atomic():
                    snap = snapshot_store(title="bench capture", description=None,
                                          created_by=None, kind="snapshot", rows=rows,
                                          counts=Completeness())  # fmt: skip
                captures.append(time.perf_counter() - started)
                services.snapshot_delete(snapshot_id=str(snap.pk), actor="system:bench")
        finally:
            close_old_connections()

    big = list(Snapshot.objects.filter(title__startswith="big run ").values_list("pk", flat=True))
    deletes = []
    thread = threading.Thread(target=capture_loop)
    thread.start()
    try:
        time.sleep(1.0)
        for pk in big[: args.repeat]:
            started = time.perf_counter()
            services.snapshot_delete(snapshot_id=str(pk), actor="system:bench")
            deletes.append(time.perf_counter() - started)
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    show(f"3. delete a 50K snapshot during captures ({len(captures)} captures, median "
         f"{statistics.median(captures):.2f} s)", deletes, 1.0)  # fmt: skip

    # 4. a retention sweep of 1,000 snapshots
    schedule = schedules.schedule_create(
        data=schedules.ScheduleData(
            name=f"bench {time.time()}", interval_seconds=3600, keep_last=1
        ),  # fmt: skip
        actor="system:bench",
        created_by="system:bench",
    )
    doomed = list(
        Snapshot.objects.filter(title__startswith="small run ")
        .order_by("-created_at")
        .values_list("pk", flat=True)[: SWEEP + 1]
    )
    Snapshot.objects.filter(pk__in=doomed).update(schedule=schedule, labels=[])
    started = time.perf_counter()
    deleted = schedules.retention_sweep(actor="system:bench")
    elapsed = time.perf_counter() - started
    show(f"4. retention sweep ({deleted} snapshots of {SMALL_VALUES} values)", [elapsed], 30.0)
    schedules.schedule_delete(schedule_id=str(schedule.pk), actor="system:bench")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("(deleted snapshots are re-seeded by the next run)")


if __name__ == "__main__":
    main()

"""Migration benchmark: a FastAPI-Squirrel-shaped database of 50K PVs and 40 snapshots of 50K
values (2M values) moved onto ours with ``manage.py import_fastapi_squirrel``.

Run by hand: ``.venv/bin/python bench/migrate.py [--pvs 50000] [--snapshots 40] [--runs 3]``.
The source (database ``squirrel_bench_fastapi``) gets the FastAPI Squirrel's own schema, taken
from the fixture dump (``tests/snapshots/fastapi_fixture/dump.sql.gz``), and is filled by SQL:
PVs (a tenth with ``ca://``, a tenth with ``pva://``), 3 tag groups, 48 tags, 3 tags per PV,
snapshots whose values are half double-encoded JSON strings (its cache path) and half JSON
objects (its direct path); among the values, enum indexes, strings and 64-element waveforms.
Each run migrates the target (``squirrel_bench_migrate``) afresh and runs the importer in a
child process: the figures are its wall time and its peak RSS (``ru_maxrss``). Goals: ≤ 30 s,
≤ 300 MB. Both databases are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMP = ROOT / "tests" / "snapshots" / "fastapi_fixture" / "dump.sql.gz"
SERVER = "postgresql://postgres@127.0.0.1:5432"
SOURCE_DB = "squirrel_bench_fastapi"
TARGET_DB = "squirrel_bench_migrate"
TABLES = "api_key, job, pv_tag, snapshot_value, snapshot, tag, tag_group, pv"


def psql(db: str, sql: str, *, stdin: bytes | None = None) -> str:
    args = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", f"{SERVER}/{db}"]
    if stdin is None:
        args += ["-c", sql]
    done = subprocess.run(args, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"psql failed on {db}: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip()


def recreate(db: str) -> None:
    psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql("postgres", f'CREATE DATABASE "{db}"')


def build_source(pvs: int, snapshots: int) -> None:
    """The FastAPI Squirrel's schema (from the fixture dump, rows removed), then generated rows."""
    recreate(SOURCE_DB)
    psql(SOURCE_DB, "", stdin=gzip.decompress(DUMP.read_bytes()))
    psql(SOURCE_DB, f"TRUNCATE {TABLES}")
    started = time.monotonic()
    psql(
        SOURCE_DB,
        f"""
        INSERT INTO tag_group (id, name) SELECT gen_random_uuid(), g
          FROM unnest(ARRAY['Region', 'Area', 'Subsystem']) g;
        INSERT INTO tag (id, name, group_id) SELECT gen_random_uuid(), g.name || '-' || i, g.id
          FROM tag_group g, generate_series(1, 16) i;
        INSERT INTO pv (id, setpoint_address, readback_address, device, description,
                        abs_tolerance, rel_tolerance)
          SELECT gen_random_uuid(),
                 (CASE WHEN i % 10 = 1 THEN 'ca://' WHEN i % 10 = 2 THEN 'pva://' ELSE '' END)
                   || 'BENCH:DEV' || i || ':SP',
                 'BENCH:DEV' || i || ':RB', 'DEV' || (i / 100),
                 CASE WHEN i % 50 = 0 THEN 'bench PV ' || i || ' — µA' END,
                 CASE WHEN i % 7 = 0 THEN 0.5 ELSE 0 END, 0
          FROM generate_series(1, {pvs}) i;
        INSERT INTO pv_tag (pv_id, tag_id)
          SELECT p.id, (SELECT t.id FROM tag t WHERE t.group_id = g.id
                        ORDER BY md5(p.id::text || t.id::text) LIMIT 1)
          FROM pv p CROSS JOIN tag_group g;
        INSERT INTO snapshot (id, title, description, created_by, created_at)
          SELECT gen_random_uuid(), 'bench ' || s, 'generated snapshot ' || s, 'bench',
                 now() - make_interval(hours => {snapshots} - s)
          FROM generate_series(1, {snapshots}) s;
        INSERT INTO api_key (id, app_name, token_hash, read_access, write_access)
          VALUES (gen_random_uuid(), 'bench-rw', md5('a') || md5('b'), true, true),
                 (gen_random_uuid(), 'bench-ro', md5('c') || md5('d'), true, false);
        """,
    )
    # The values: one INSERT per snapshot (2M rows at once would need a 2M-row sort).
    value = """CASE WHEN n % 100 = 3 THEN to_jsonb('setting ' || n)
                    WHEN n % 50 = 1 THEN to_jsonb(n % 4)
                    WHEN n % 500 = 7 THEN (SELECT jsonb_agg(round((sin(k + n) * 100)::numeric, 6))
                                           FROM generate_series(1, 64) k)
                    ELSE to_jsonb(round((random() * 200 - 100)::numeric, 4)) END"""
    ids = psql(SOURCE_DB, "SELECT id FROM snapshot ORDER BY created_at").split()
    for s, sid in enumerate(ids):
        if s % 2 == 0:  # its cache path: a JSON string of the JSON, metadata dropped
            side = (
                "to_jsonb(jsonb_build_object('value', v, 'status', null, 'severity', null,"
                " 'timestamp', null)::text)"
            )
            level = "NULL::int, NULL::int"
        else:  # its direct path: a JSON object
            side = (
                "jsonb_build_object('units', null, 'value', v, 'status', 0, 'severity', 0,"
                " 'precision', null, 'timestamp', to_char(now() AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.US'))"
            )
            level = "0, 0"
        psql(
            SOURCE_DB,
            f"""
            INSERT INTO snapshot_value (id, snapshot_id, pv_id, pv_name, setpoint_value,
                                        readback_value, status, severity, timestamp)
            SELECT gen_random_uuid(), '{sid}', id, setpoint_address, {side}, {side}, {level},
                   now()
            FROM (SELECT id, setpoint_address, {value} AS v
                  FROM (SELECT id, setpoint_address, row_number() OVER (ORDER BY id) AS n
                        FROM pv) p) x
            """,
        )
    psql(SOURCE_DB, "VACUUM ANALYZE")
    total = psql(SOURCE_DB, "SELECT count(*) FROM snapshot_value")
    print(f"source: {pvs} PVs, {snapshots} snapshots, {total} values, "
          f"built in {time.monotonic() - started:.0f} s")  # fmt: skip


def run_once(env: dict[str, str]) -> tuple[float, float, str]:
    """Migrate the target afresh, then time the importer: (seconds, peak RSS MB, its output)."""
    recreate(TARGET_DB)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "manage.py", "import_fastapi_squirrel", "--no-progress",
         "--dsn", f"{SERVER}/{SOURCE_DB}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert child.stdout is not None
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"the importer failed ({child.returncode}):\n{output}")
    return seconds, usage.ru_maxrss / 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pvs", type=int, default=50_000)
    parser.add_argument("--snapshots", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep both databases")
    parser.add_argument("--reuse-source", action="store_true", help="skip building the source")
    args = parser.parse_args()
    env = {
        **os.environ,
        "SQUIRREL_DATABASE_URL": f"{SERVER}/{TARGET_DB}",
        "SQUIRREL_SECRET_KEY": os.environ.get("SQUIRREL_SECRET_KEY", "bench-only-not-a-secret"),
        "SQUIRREL_REDIS_PREFIX": "squirrel-bench:",
        "SQUIRREL_LOG_LEVEL": "WARNING",
    }
    if not args.reuse_source:
        build_source(args.pvs, args.snapshots)
    times, rss = [], []
    try:
        for run in range(args.runs):
            load = os.getloadavg()
            seconds, peak, output = run_once(env)
            times.append(seconds)
            rss.append(peak)
            print(f"run {run + 1}: {seconds:.1f} s, peak RSS {peak:.0f} MB "
                  f"(load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")  # fmt: skip
            if run == 0:
                print(output.rstrip())
    finally:
        if not args.keep:
            psql("postgres", f'DROP DATABASE IF EXISTS "{TARGET_DB}" WITH (FORCE)')
            psql("postgres", f'DROP DATABASE IF EXISTS "{SOURCE_DB}" WITH (FORCE)')
    print(f"median of {len(times)}: {statistics.median(times):.1f} s (goal ≤ 30 s), "
          f"peak RSS {statistics.median(rss):.0f} MB (goal ≤ 300 MB)")  # fmt: skip


if __name__ == "__main__":
    main()

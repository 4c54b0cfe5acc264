"""Live pages at 50K devices in Chromium (issue 16, item 3), by hand: prints figures.

    flock /tmp/squirrel-test.lock .venv/bin/python bench/pages.py [--count 50000] [--repeat 3]

Sets up, on its own database (``squirrel_bench_pages`` unless SQUIRREL_DATABASE_URL is set)
and Redis prefix: a catalog of ``count`` sim devices, the simulated IOC serving them,
``manage.py monitor`` filling the cache, ``repeat`` snapshots captured from it, and one daphne
web process. Then, in headless Debian Chromium (Playwright):

1. snapshot-vs-live page, first screen (a page of rows with their verdicts drawn), cold: the
   first page of a snapshot this web process has not compared yet        goal <= 2 s
   and warm: the same snapshot opened again (its verdict state shared)
2. PV browser, first screen (rows drawn) and first live values drawn      goal <= 1 s
3. web process CPU over ``--seconds`` (a fresh daphne) with no page, one, then ten snapshot
   pages of the same snapshot open                                        goal: ten <= 1.5x one
4. web process RSS with the ten pages open.

Every process it starts is stopped at the end; its Redis keys are deleted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault(
    "SQUIRREL_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/squirrel_bench_pages"
)
os.environ.setdefault("SQUIRREL_REDIS_PREFIX", "squirrel-bench-pages:")
os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench")
os.environ.setdefault("SQUIRREL_ANONYMOUS_ACCESS", "read")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
os.environ["EPICS_CA_ADDR_LIST"] = "127.0.0.1"
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"

from bench.common import Proc, free_port, start_daphne, vacuum  # noqa: E402
from bench.snapshot import catalog_build, ensure_database  # noqa: E402

PY = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-background-timer-throttling",
                 "--disable-renderer-backgrounding"]  # fmt: skip
SNAPSHOT_READY = (
    "() => document.querySelectorAll('#values tbody tr[class^=\"verdict-\"]').length > 0"
)
BROWSER_ROWS = "() => document.querySelectorAll('#pvs tbody tr').length > 0"
BROWSER_LIVE = (
    "() => { const c = document.querySelector('#pvs tbody td.live-sp');"
    " return c && c.textContent !== '—'; }"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_share(pid: int, seconds: float) -> float:
    """The process's CPU use over ``seconds``, in % of one core."""
    start, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.monotonic() - t0)


def timed_open(browser, url: str, condition: str, timeout: float = 60_000) -> float:
    """Seconds from navigation start to ``condition`` true on a fresh page (then closed)."""
    context = browser.new_context()
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(url, wait_until="commit")
        page.wait_for_function(condition, timeout=timeout, polling="raf")
        return time.perf_counter() - started
    finally:
        context.close()


def report(label: str, times: list[float], goal: str) -> None:
    runs = ", ".join(f"{t:.2f}" for t in times)
    print(f"  {label:<46}: {statistics.median(times):6.2f} s  ({goal}; runs {runs}); "
          f"load {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="sim devices = catalog rows")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="each CPU measurement")
    parser.add_argument("--prefix", default="PAGES")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    ensure_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from monitor import events
    from snapshots.capture import snapshot_capture

    call_command("migrate", verbosity=0)
    channels = catalog_build(args.count, args.prefix)
    vacuum()
    print(f"catalog: {args.count} PVs, {channels} channels; load {os.getloadavg()}", flush=True)
    ca_port = free_port()
    env = {**os.environ, "EPICS_CA_SERVER_PORT": str(ca_port),
           "EPICS_CA_REPEATER_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    os.environ.update({k: env[k] for k in ("EPICS_CA_SERVER_PORT", "EPICS_CA_REPEATER_PORT")})
    procs: list[Proc] = []
    redis = events.sync_redis()
    web = None
    try:
        ioc = Proc("sim_ioc", [PY, "manage.py", "sim_ioc", "--count", str(args.count),
                               "--prefix", args.prefix, "--port", str(ca_port)], env)  # fmt: skip
        procs.append(ioc)
        ioc.wait_for("sim_ioc ready", 180)
        procs.append(Proc("monitor", [PY, "manage.py", "monitor"], env))
        t0 = time.monotonic()
        while (
            redis.hlen(events.values_hash()) < channels
            or redis.scard(events.disconnected_set()) > 0
        ):
            if time.monotonic() - t0 > 180:
                raise RuntimeError("monitor did not fill the cache")
            time.sleep(0.2)
        print(f"monitor: {channels} values cached after {time.monotonic() - t0:.1f} s")
        snapshots = [
            snapshot_capture(
                title=f"pages {i}", description=None, use_cache=True, created_by=None
            )  # fmt: skip
            for i in range(args.repeat)
        ]
        port = free_port()
        web = start_daphne(port, env)
        base = f"http://127.0.0.1:{port}"
        print(f"\n{args.count} devices, median of {args.repeat}:", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                timed_open(browser, f"{base}/live/pvs", BROWSER_ROWS)  # warm the web process
                cold = [
                    timed_open(browser, f"{base}/live/snapshots/{s.pk}", SNAPSHOT_READY)
                    for s in snapshots
                ]
                report("snapshot page, first screen (cold compare)", cold, "goal <= 2 s")
                warm = [
                    timed_open(
                        browser, f"{base}/live/snapshots/{snapshots[0].pk}", SNAPSHOT_READY
                    )  # fmt: skip
                    for _ in range(args.repeat)
                ]
                report("snapshot page, first screen (shared state)", warm, "goal <= 2 s")
                rows = [timed_open(browser, f"{base}/live/pvs", BROWSER_ROWS)
                        for _ in range(args.repeat)]  # fmt: skip
                report("PV browser, first screen (rows)", rows, "goal <= 1 s")
                lives = [timed_open(browser, f"{base}/live/pvs", BROWSER_LIVE)
                         for _ in range(args.repeat)]  # fmt: skip
                report("PV browser, first live values drawn", lives, "goal <= 1 s")

                # A fresh web process: no verdict state or socket fan-out left from above.
                web.terminate()
                web.wait(20)
                web = start_daphne(port, env)
                url = f"{base}/live/snapshots/{snapshots[0].pk}"
                idle = cpu_share(web.pid, args.seconds)
                contexts = []
                for _ in range(10):
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(url)
                    page.wait_for_function(SNAPSHOT_READY, timeout=60_000)
                    contexts.append(context)
                    if len(contexts) == 1:
                        one = cpu_share(web.pid, args.seconds)
                ten = cpu_share(web.pid, args.seconds)
                rss = rss_mb(web.pid)
                print(f"  web CPU, no page open                         : {idle:5.1f} %")
                print(f"  web CPU, one snapshot page open               : {one:5.1f} %")
                print(f"  web CPU, ten snapshot pages open              : {ten:5.1f} %  "
                      f"(ten / one = {ten / one:.2f}; goal <= 1.5)")  # fmt: skip
                print(f"  web RSS, ten pages open                       : {rss:5.0f} MB; "
                      f"load {os.getloadavg()}", flush=True)  # fmt: skip
                for context in contexts:
                    context.close()
            finally:
                browser.close()
    finally:
        if web is not None:
            web.terminate()
            web.wait(20)
        for proc in reversed(procs):
            proc.stop()
        keys = list(redis.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=10_000))
        for start in range(0, len(keys), 5000):
            redis.delete(*keys[start : start + 5000])


if __name__ == "__main__":
    main()

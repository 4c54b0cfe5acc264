"""Benchmark of the monitor (issue 3) against the simulated IOC; by hand, prints figures.

    SQUIRREL_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/squirrel_h2 \\
        .venv/bin/python bench/monitor.py [--devices 26316] [--runs 3] [--scale] [--stock]

For a catalog of N channels (sim_ioc devices: setpoint + readback, some read-only):
  * fill: from starting ``manage.py monitor`` until every address has an entry in Redis and
    none is disconnected (median of --runs);
  * CPU (% of one core) and RSS of the monitor while the IOC streams ~5K updates/s
    (10 % of channels at 1 Hz), and ~50K updates/s (10 % at 10 Hz);
  * update -> Redis lag (p50/p99: IOC timestamp to the published batch arriving here);
  * at 50K/s: updating PVs whose Redis value is more than 1 s old (should be none);
  * --stock: caproto's stock asyncio client, connect + subscribe + first values (capped);
  * --scale: the same at twice the devices (~100K channels).
The catalog is written to the database named in SQUIRREL_DATABASE_URL (its PV table is
replaced); Redis keys use a private prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import free_port  # noqa: E402

PREFIX = f"bench-h2-{os.urandom(3).hex()}:"
os.environ["SQUIRREL_REDIS_PREFIX"] = PREFIX
os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench-only")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")


PORT = free_port()
os.environ.update(
    {
        "EPICS_CA_SERVER_PORT": str(PORT),
        "EPICS_CA_REPEATER_PORT": str(free_port()),
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_MAX_ARRAY_BYTES": "100000",
    }
)

import django  # noqa: E402

django.setup()

import msgpack  # noqa: E402
from django.core.management import call_command  # noqa: E402

from monitor import events, sim  # noqa: E402
from pvs.models import PV  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
MANAGE = [sys.executable, str(ROOT / "manage.py")]

_STOCK = r"""
import asyncio, json, sys, time
from caproto.asyncio.client import Context
names = [line.strip() for line in open(sys.argv[1]) if line.strip()]
cap = float(sys.argv[2])
async def main():
    t0 = time.monotonic()
    ctx = Context()
    first = set()
    def cb(sub, response):
        first.add(sub.pv.name)
    pvs = await ctx.get_pvs(*names, timeout=cap)
    for pv in pvs:
        pv.subscribe(data_type="time").add_callback(cb)
    while len(first) < len(names) and time.monotonic() - t0 < cap:
        await asyncio.sleep(0.2)
    out = {"seconds": time.monotonic() - t0, "first_values": len(first),
           "connected": sum(1 for pv in pvs if pv.connected), "of": len(names)}
    print(json.dumps(out), flush=True)
    import os; os._exit(0)
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def clear_redis(client) -> None:
    keys = list(client.scan_iter(match=f"{PREFIX}*", count=10_000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


def load_catalog(devices: list[sim.Device]) -> list[str]:
    PV.objects.all().delete()
    rows = [PV(setpoint_address=d.setpoint, readback_address=d.readback) for d in devices]
    PV.objects.bulk_create(rows, batch_size=5000)
    return [a for d in devices for a in (d.setpoint, d.readback) if a]


def start_ioc(devices: int, share: float, rate: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*MANAGE, "sim_ioc", "--count", str(devices), "--prefix", "BENCH", "--port", str(PORT)]
        + ["--update-share", str(share), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ready" in line:
            return proc
    raise RuntimeError("sim_ioc did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_monitor() -> subprocess.Popen:
    return subprocess.Popen(
        [*MANAGE, "monitor"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_filled(client, count: int, started: float, limit: float = 120.0) -> float:
    while time.monotonic() - started < limit:
        if client.hlen(events.values_hash()) >= count and not client.scard(
            events.disconnected_set()
        ):
            return time.monotonic() - started
        time.sleep(0.02)
    return float("nan")


def measure(client, pid: int, seconds: float) -> dict[str, float]:
    """CPU %, RSS and update->Redis lag (IOC timestamp -> the monitor's flush time ``t``)
    over ``seconds`` of steady streaming."""
    pubsub = client.pubsub()
    pubsub.subscribe(events.updates_channel())
    lags: list[float] = []
    updates = 0
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    rss_max = 0.0
    while time.monotonic() - t0 < seconds:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        rss_max = max(rss_max, rss_mb(pid))
        if not message:
            continue
        batch = msgpack.unpackb(message["data"], raw=False)
        flushed = batch["t"]  # when the monitor wrote the batch to Redis
        for entry in batch["u"].values():
            stamp = entry.get("timestamp")
            if stamp and entry.get("connected"):
                lags.append(flushed - stamp)
        updates += len(batch["u"])
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    pubsub.close()
    lags.sort()
    return {
        "cpu_pct": cpu,
        "rss_mb": rss_max,
        "updates_per_s": updates / seconds,
        "lag_p50_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "lag_p99_ms": lags[int(len(lags) * 0.99)] * 1000 if lags else float("nan"),
    }


def stale_updating(client, seconds: float = 3.0) -> tuple[int, int]:
    """(updating PVs, those whose cached value is > 1 s old) from two cache reads."""
    first = client.hgetall(events.values_hash())
    time.sleep(seconds)
    now = time.time()
    second = client.hgetall(events.values_hash())
    updating = stale = 0
    for name, data in second.items():
        old = first.get(name)
        if old is None or old == data:
            continue
        updating += 1
        entry = msgpack.unpackb(data, raw=False)
        if now - entry.get("timestamp", 0) > 1.0:
            stale += 1
    return updating, stale


def stock_client(names: list[str], cap: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as out:
        out.write("\n".join(names))
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOCK, out.name, str(cap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line, _ = proc.communicate(timeout=cap + 60)
        return json.loads(line.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError):
        proc.kill()
        proc.wait()
        return {"error": "no result"}
    finally:
        Path(out.name).unlink()


def scenario(devices_count: int, runs: int, stock: bool, client) -> None:
    devices = sim.sim_devices(count=devices_count, prefix="BENCH", update_share=0.1)
    names = load_catalog(devices)
    print(f"\n== {devices_count} devices, {len(names)} channels ==", flush=True)
    ioc = start_ioc(devices_count, 0.1, 1.0)
    try:
        fills = []
        for run in range(runs):
            clear_redis(client)
            started = time.monotonic()
            mon = start_monitor()
            try:
                fills.append(wait_filled(client, len(names), started))
                print(f"fill run {run + 1}: {fills[-1]:.2f} s", flush=True)
                if run == 0:
                    time.sleep(3)
                    figures = measure(client, mon.pid, 10.0)
                    print("10 % of channels at 1 Hz:", _fmt(figures), flush=True)
            finally:
                stop(mon)
            time.sleep(5)  # let the IOC free the last run's 50K channels
        print(f"fill (start monitor -> all {len(names)} in Redis), median of {runs}: "
              f"{statistics.median(fills):.2f} s", flush=True)  # fmt: skip
        if stock:
            result = stock_client(names, 60.0)
            print(f"caproto stock asyncio client, connect+subscribe: {result}", flush=True)
    finally:
        stop(ioc)
    ioc = start_ioc(devices_count, 0.1, 10.0)
    try:
        clear_redis(client)
        started = time.monotonic()
        mon = start_monitor()
        try:
            fill = wait_filled(client, len(names), started)
            print(f"fill while 10 % of channels change at 10 Hz: {fill:.2f} s", flush=True)
            time.sleep(3)
            print("10 % of channels at 10 Hz:", _fmt(measure(client, mon.pid, 10.0)), flush=True)
            updating, stale = stale_updating(client)
            print(f"updating PVs: {updating}, cached value older than 1 s: {stale}", flush=True)
        finally:
            stop(mon)
    finally:
        stop(ioc)


def _fmt(figures: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.1f}" for k, v in figures.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=26316, help="~50K channels")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stock", action="store_true", help="also caproto's stock client")
    parser.add_argument("--scale", action="store_true", help="also twice the devices")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    client = events.sync_redis()
    try:
        scenario(args.devices, args.runs, args.stock, client)
        if args.scale:
            scenario(args.devices * 2, args.runs, False, client)
    finally:
        clear_redis(client)
        PV.objects.all().delete()


if __name__ == "__main__":
    main()

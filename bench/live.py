"""Live-value fan-out benchmark (issue "Live values"). Run by hand; prints figures.

    .venv/bin/python bench/live.py [--pvs 50000] [--clients 100] [--per-client 1000] [--seconds 20]

Starts a real daphne web process on a free loopback port with a Redis prefix of its own, fills the
value cache with N PVs, connects C WebSocket clients each subscribed to K PVs, then publishes
update batches exactly as the monitor does (one HSET + one published batch every 100 ms: 10 % of
the PVs changing at 1 Hz), and at the end one burst of all N. Each entry carries its publish time,
so a client measures update -> client latency. Also times POST /v1/pvs/live with 5K names.
Reports latency p50/p99, updates delivered, web CPU % of one core and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PREFIX = f"squirrel-bench-live-{os.getpid()}:"
os.environ["SQUIRREL_REDIS_PREFIX"] = PREFIX
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench-only")

import django  # noqa: E402

django.setup()

from monitor import events  # noqa: E402
from monitor.values import pack  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def entry(value: float) -> dict:
    now = time.time()
    return {"value": value, "connected": True, "updated_at": now, "timestamp": now,
            "status": 0, "severity": 0, "units": "mA", "precision": 3}  # fmt: skip


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client(url: str, names: list[str], latencies: list[float], ready: asyncio.Event,
                 counter: list[int], stop: asyncio.Event) -> None:  # fmt: skip
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "pvNames": names}))
        first = json.loads(await ws.recv())
        assert first["type"] == "initial", first
        ready.set()
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
            except TimeoutError:
                continue
            now = time.time()
            message = json.loads(raw)
            if message["type"] != "diff":
                continue
            for value in message["data"].values():
                latencies.append(now - value["updated_at"])
            counter[0] += message["count"]


def publish(rds: redis.Redis, updates: dict[str, dict]) -> None:
    pipe = rds.pipeline(transaction=False)
    pipe.hset(events.values_hash(), mapping={k: pack(v) for k, v in updates.items()})
    pipe.publish(events.updates_channel(), msgpack.packb({"t": time.time(), "u": updates}))
    pipe.execute()


async def run(args: argparse.Namespace) -> None:
    rds = redis.Redis.from_url(os.environ.get("SQUIRREL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    names = [f"BENCH:DEV{i}:SP" for i in range(args.pvs)]
    for start in range(0, len(names), 10_000):
        publish(rds, {n: entry(0.0) for n in names[start : start + 10_000]})
    port = free_port()
    env = {**os.environ, "SQUIRREL_ANONYMOUS_ACCESS": "read"}
    web = subprocess.Popen(
        [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port),
         "squirrel.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        # POST /v1/pvs/live with 5K names (the frontend's poll)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"pv_names": random.sample(names, 5000)})
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/pvs/live", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            times.append(time.perf_counter() - t0)
            assert response.status == 200, data[:200]
        assert len(json.loads(data)["payload"]) == 5000
        print(f"POST /v1/pvs/live 5K names: median {statistics.median(times) * 1000:.1f} ms, "
              f"p90 {pct(times, 0.9) * 1000:.1f} ms (30 requests)")  # fmt: skip

        url = f"ws://127.0.0.1:{port}/v1/ws/pvs"
        latencies: list[float] = []
        counter = [0]
        stop = asyncio.Event()
        readies = []
        tasks = []
        for i in range(args.clients):
            start = (i * args.pvs // args.clients) % args.pvs
            subset = [names[(start + j) % args.pvs] for j in range(args.per_client)]
            ready = asyncio.Event()
            readies.append(ready)
            tasks.append(asyncio.create_task(client(url, subset, latencies, ready, counter, stop)))
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=60)
        print(f"{args.clients} clients x {args.per_client} PVs subscribed; streaming "
              f"{args.pvs // 10} changes/s for {args.seconds} s")  # fmt: skip
        cpu0, wall0 = proc_cpu_seconds(web.pid), time.monotonic()
        per_tick = max(1, args.pvs // 10 // 10)
        tick = 0
        published = 0
        while time.monotonic() - wall0 < args.seconds:
            batch = random.sample(names, per_tick)
            publish(rds, {n: entry(float(tick)) for n in batch})
            published += len(batch)
            tick += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        cpu = (proc_cpu_seconds(web.pid) - cpu0) / (time.monotonic() - wall0) * 100
        steady = list(latencies)
        print(f"steady: {published} updates published, {counter[0]} delivered to clients; "
              f"latency p50 {pct(steady, 0.5) * 1000:.0f} ms, "
              f"p99 {pct(steady, 0.99) * 1000:.0f} ms; "
              f"web CPU {cpu:.0f} % of one core, RSS {proc_rss_mb(web.pid):.0f} MB")  # fmt: skip
        latencies.clear()
        delivered0 = counter[0]
        cpu0, wall0 = proc_cpu_seconds(web.pid), time.monotonic()
        for start in range(0, args.pvs, 10_000):
            publish(rds, {n: entry(-1.0) for n in names[start : start + 10_000]})
        expected = args.clients * args.per_client
        deadline = time.monotonic() + 30
        while counter[0] - delivered0 < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        took = time.monotonic() - wall0
        cpu = (proc_cpu_seconds(web.pid) - cpu0) / took * 100
        print(f"burst of all {args.pvs}: {counter[0] - delivered0}/{expected} client updates "
              f"in {took:.2f} s; latency p50 {pct(latencies, 0.5) * 1000:.0f} ms, p99 "
              f"{pct(latencies, 0.99) * 1000:.0f} ms; web CPU {cpu:.0f} %, RSS "
              f"{proc_rss_mb(web.pid):.0f} MB")  # fmt: skip
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        web.terminate()
        try:
            web.wait(timeout=10)
        except subprocess.TimeoutExpired:
            web.kill()
        keys = list(rds.scan_iter(match=f"{PREFIX}*", count=10_000))
        if keys:
            rds.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pvs", type=int, default=50_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-client", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

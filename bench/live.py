"""Live-value fan-out benchmark (issue "Live values"). Run by hand; prints figures.

    .venv/bin/python bench/live.py [--pvs 50000] [--clients 100] [--per-client 1000]
        [--seconds 20] [--bursts 5] [--client-procs 2]

Starts a real daphne web process on a free loopback port with a Redis prefix of its own, fills the
value cache with N PVs, connects C WebSocket clients each subscribed to K PVs, then publishes
update batches exactly as the monitor does (one HSET + one published batch every 100 ms: 10 % of
the PVs changing at 1 Hz), and at the end bursts of all N (5 by default, 2 s apart). Each entry
carries its publish time, so a client measures update -> client latency; the clients run in
processes of their own. Also times POST /v1/pvs/live with 5K names.
Reports latency p50/p99, updates delivered, web CPU % of one core and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import free_port, start_daphne  # noqa: E402

PREFIX = f"squirrel-bench-live-{os.getpid()}:"
os.environ["SQUIRREL_REDIS_PREFIX"] = PREFIX
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
os.environ.setdefault("SQUIRREL_SECRET_KEY", "bench-only")

import django  # noqa: E402

django.setup()

from monitor import events  # noqa: E402
from monitor.values import pack  # noqa: E402


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


async def client(url: str, names: list[str], steady: list[float], burst: list[tuple[float, float]],
                 ready: asyncio.Event, burst_count: Any, stop: Any) -> None:  # fmt: skip
    """One WebSocket client: latency of each update by its entry's ``updated_at``; burst k
    publishes value -k, so each latency is filed as steady or burst (with its number) by the
    value. Decoded with orjson: the clients share the machine's two cores with the web process,
    and the stdlib json spent as much CPU decoding a burst as the server spent sending it."""
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
            message = orjson.loads(raw)
            if message["type"] != "diff":
                continue
            n = 0
            for value in message["data"].values():
                if value["value"] < 0:
                    burst.append((-value["value"], now - value["updated_at"]))
                    n += 1
                else:
                    steady.append(now - value["updated_at"])
            if n:
                with burst_count.get_lock():
                    burst_count.value += n


def clients_process(url: str, subsets: list[list[str]], ready: Any, burst_count: Any,
                    stop: Any, out: Any) -> None:  # fmt: skip
    """A process of WebSocket clients (apart from the publisher, so that decoding 100K
    updates here does not delay the publishing or skew the other's clock reads)."""

    async def main() -> None:
        steady: list[float] = []
        burst: list[tuple[float, float]] = []
        readies = [asyncio.Event() for _ in subsets]
        tasks = [
            asyncio.create_task(client(url, names, steady, burst, r, burst_count, stop))
            for names, r in zip(subsets, readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=60)
        ready.release()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await asyncio.gather(*tasks, return_exceptions=True)
        out.put((steady, burst))

    asyncio.run(main())


def publish(rds: redis.Redis, updates: dict[str, dict]) -> None:
    """One flush of the monitor (monitor.runner): HSET the packed entries, publish the batch."""
    packed = {k: pack(v) for k, v in updates.items()}
    pipe = rds.pipeline(transaction=False)
    pipe.hset(events.values_hash(), mapping=packed)
    pipe.publish(events.updates_channel(), events.update_batch(time.time(), packed))
    pipe.execute()


async def run(args: argparse.Namespace) -> None:
    rds = redis.Redis.from_url(os.environ.get("SQUIRREL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    names = [f"BENCH:DEV{i}:SP" for i in range(args.pvs)]
    for start in range(0, len(names), 10_000):
        publish(rds, {n: entry(0.0) for n in names[start : start + 10_000]})
    port = free_port()
    env = {**os.environ, "SQUIRREL_ANONYMOUS_ACCESS": "read"}
    web = start_daphne(port, env)
    try:
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
        subsets = []
        for i in range(args.clients):
            start = (i * args.pvs // args.clients) % args.pvs
            subsets.append([names[(start + j) % args.pvs] for j in range(args.per_client)])
        ctx = multiprocessing.get_context("spawn")
        ready, stop, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        burst_count = ctx.Value("l", 0)
        procs = [
            ctx.Process(
                target=clients_process,
                args=(url, subsets[k :: args.client_procs], ready, burst_count, stop, out),
            )
            for k in range(args.client_procs)
        ]
        for proc in procs:
            proc.start()
        try:
            for _ in procs:
                if not ready.acquire(timeout=90):
                    raise RuntimeError("WebSocket clients did not subscribe within 90 s")
            print(f"{args.clients} clients x {args.per_client} PVs subscribed (in "
                  f"{args.client_procs} processes); streaming {args.pvs // 10} changes/s for "
                  f"{args.seconds} s")  # fmt: skip
            cpu0, wall0 = proc_cpu_seconds(web.pid), time.monotonic()
            per_tick = max(1, args.pvs // 10 // 10)
            tick = 0
            published = 0
            while time.monotonic() - wall0 < args.seconds:
                batch = random.sample(names, per_tick)
                publish(rds, {n: entry(float(tick)) for n in batch})
                published += len(batch)
                tick += 1
                await asyncio.sleep(max(0.0, wall0 + tick * 0.1 - time.monotonic()))
            await asyncio.sleep(1.0)
            steady_cpu = (proc_cpu_seconds(web.pid) - cpu0) / (time.monotonic() - wall0) * 100
            steady_rss = proc_rss_mb(web.pid)
            expected = args.clients * args.per_client
            bursts = []  # (seconds until all delivered, publishing seconds, web CPU %)
            for k in range(1, args.bursts + 1):
                await asyncio.sleep(2.0)  # the previous burst drained; a quiet moment
                cpu0, wall0 = proc_cpu_seconds(web.pid), time.monotonic()
                for start in range(0, args.pvs, 10_000):
                    chunk = names[start : start + 10_000]
                    publish(rds, {n: entry(-float(k)) for n in chunk})
                publishing = time.monotonic() - wall0
                deadline = time.monotonic() + 30
                while burst_count.value < k * expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                took = time.monotonic() - wall0
                bursts.append((took, publishing, (proc_cpu_seconds(web.pid) - cpu0) / took * 100))
        finally:
            stop.set()
            results = [out.get(timeout=30) for _ in procs]
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
        steady = [x for r in results for x in r[0]]
        print(f"steady: {published} updates published, {len(steady)} delivered to clients; "
              f"latency p50 {pct(steady, 0.5) * 1000:.0f} ms, "
              f"p99 {pct(steady, 0.99) * 1000:.0f} ms; "
              f"web CPU {steady_cpu:.0f} % of one core, RSS {steady_rss:.0f} MB")  # fmt: skip
        p99s = []
        for k, (took, publishing, cpu) in enumerate(bursts, 1):
            lat = [x for r in results for b, x in r[1] if b == k]
            p99s.append(pct(lat, 0.99))
            print(f"burst {k} of all {args.pvs}: {len(lat)}/{expected} client updates in "
                  f"{took:.2f} s (publishing took {publishing:.2f} s); latency p50 "
                  f"{pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms; "
                  f"web CPU {cpu:.0f} %")  # fmt: skip
        print(f"burst latency p99, median of {len(p99s)} bursts: "
              f"{statistics.median(p99s) * 1000:.0f} ms (goal <= 250 ms); web RSS "
              f"{proc_rss_mb(web.pid):.0f} MB")  # fmt: skip
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
    parser.add_argument("--bursts", type=int, default=5, help="bursts of all N, 2 s apart")
    parser.add_argument("--client-procs", type=int, default=2, help="processes of clients")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

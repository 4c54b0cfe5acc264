"""Bare pvAccess bindings, no Squirrel: the floor ``bench/pva.py`` prints beside our figures.

    .venv/bin/python bench/pva_bare.py BINDING TASK NAMES_FILE [--seconds S] [--value V]

BINDING is ``p4p`` or ``pvapy``; the PVA environment (``EPICS_PVA_*``) names the server.
NAMES_FILE has one PV name per line. TASK:

* ``subscribe``: monitor every name (``field(value,alarm,timeStamp)``), paced at ``--pace``
  names per 100 ms (0: all at once); prints the seconds until every name delivered a first
  value (or how many never did within ``--timeout``), then CPU % of one core and RSS over
  ``--seconds`` of steady updates and the update rate seen;
* ``get``: read every name once (``--chunk`` in flight); seconds and how many answered;
* ``put``: put ``--value`` to every name with completion; seconds and how many completed;
* ``types``: the enum, table and unsigned values as the binding gives them (correctness).

One JSON line on stdout: {"binding", "task", ...figures}. Each run is its own process, so RSS
is the binding's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

REQUEST = "field(value,alarm,timeStamp)"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Counter:
    """First-value bookkeeping shared by both bindings' callbacks."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen: set[str] = set()
        self.updates = 0
        self.all_seen = threading.Event()

    def update(self, name: str) -> None:
        self.updates += 1
        if name not in self.seen:
            self.seen.add(name)
            if len(self.seen) >= self.total:
                self.all_seen.set()


def _steady(counter: Counter, seconds: float) -> dict[str, float]:
    updates, cpu, wall = counter.updates, _cpu(), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - wall
    return {
        "cpu_pct": round(100 * (_cpu() - cpu) / wall, 1),
        "updates_per_s": round((counter.updates - updates) / wall),
        "rss_mb": round(_rss_mb()),
    }


def _paced(names: list[str], pace: int, start_one: Any) -> None:
    step = pace or len(names)
    for start in range(0, len(names), step):
        for name in names[start : start + step]:
            start_one(name)
        if pace:
            time.sleep(0.1)


def subscribe(binding: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    counter = Counter(len(names))
    keep: list[Any] = []
    started = time.monotonic()
    if binding == "p4p":
        from p4p.client.thread import Context

        ctx = Context("pva", nt=False)

        def start_one(name: str) -> None:
            def cb(value: Any) -> None:
                if not isinstance(value, Exception):
                    counter.update(name)

            keep.append(ctx.monitor(name, cb, request=args.request, notify_disconnect=True))

    else:
        import pvaccess

        def start_one(name: str) -> None:
            channel = pvaccess.Channel(name, pvaccess.PVA)
            channel.monitor(lambda value: counter.update(name), args.request)
            keep.append(channel)

    _paced(names, args.pace, start_one)
    subscribed = time.monotonic() - started
    complete = counter.all_seen.wait(args.timeout)
    first = time.monotonic() - started
    out = {
        "subscribe_call_s": round(subscribed, 2),
        "all_first_values_s": round(first, 2) if complete else None,
        "never_delivered": len(names) - len(counter.seen),
    }
    out.update(_steady(counter, args.seconds))
    return out


def get(binding: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    ok = 0
    started = time.monotonic()
    if binding == "p4p":
        from p4p.client.thread import Context

        ctx = Context("pva", nt=False)
        for start in range(0, len(names), args.chunk):
            chunk = names[start : start + args.chunk]
            results = ctx.get(chunk, [REQUEST] * len(chunk), timeout=args.timeout, throw=False)
            ok += sum(not isinstance(r, Exception) for r in results)
    else:
        import pvaccess

        done = threading.Semaphore(0)
        answered = [0]

        def one(name: str) -> Any:
            channel = pvaccess.Channel(name, pvaccess.PVA)

            def good(value: Any) -> None:
                answered[0] += 1
                done.release()

            channel.asyncGet(good, lambda error: done.release(), REQUEST)
            return channel

        for start in range(0, len(names), args.chunk):
            chunk = names[start : start + args.chunk]
            channels = [one(name) for name in chunk]
            deadline = time.monotonic() + args.timeout
            for _ in channels:
                if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
        ok = answered[0]
    return {"seconds": round(time.monotonic() - started, 2), "ok": ok, "of": len(names)}


def put(binding: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    value = float(args.value)
    ok = 0
    started = time.monotonic()
    if binding == "p4p":
        from p4p.client.thread import Context

        ctx = Context("pva", nt=False)
        for start in range(0, len(names), args.chunk):
            chunk = names[start : start + args.chunk]
            results = ctx.put(
                chunk, [{"value": value}] * len(chunk), wait=True, timeout=args.timeout,
                throw=False,
            )  # fmt: skip
            ok += sum(r is None for r in results)
    else:
        import pvaccess

        done = threading.Semaphore(0)
        answered = [0]

        def one(name: str) -> Any:
            channel = pvaccess.Channel(name, pvaccess.PVA)

            def good(_: Any) -> None:
                answered[0] += 1
                done.release()

            channel.asyncPut(pvaccess.PvObject({"value": pvaccess.DOUBLE}, {"value": value}),
                             good, lambda error: done.release(), "field(value)")  # fmt: skip
            return channel

        for start in range(0, len(names), args.chunk):
            chunk = names[start : start + args.chunk]
            channels = [one(name) for name in chunk]
            deadline = time.monotonic() + args.timeout
            for _ in channels:
                if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
        ok = answered[0]
    return {"seconds": round(time.monotonic() - started, 2), "ok": ok, "of": len(names)}


def types(binding: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if binding == "p4p":
        from p4p.client.thread import Context

        ctx = Context("pva", nt=False)
        for name in names:
            try:
                value = ctx.get(name, timeout=args.timeout)
                out[name] = {"id": value.getID(), "value": _plain(value.todict().get("value"))}
            except Exception as exc:  # a correctness report, not a crash
                out[name] = {"error": repr(exc)}
    else:
        import pvaccess

        for name in names:
            try:
                value = pvaccess.Channel(name, pvaccess.PVA).get("field()")
                out[name] = {"value": _plain(value.toDict().get("value"))}
            except Exception as exc:
                out[name] = {"error": repr(exc)}
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


TASKS = {"subscribe": subscribe, "get": get, "put": put, "types": types}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binding", choices=("p4p", "pvapy"))
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("names", type=Path)
    parser.add_argument("--pace", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--value", default="1.25")
    parser.add_argument("--request", default=REQUEST, help="the subscriptions' pvRequest")
    args = parser.parse_args()
    names = [n.strip() for n in args.names.read_text().splitlines() if n.strip()]
    result = TASKS[args.task](args.binding, names, args)
    print(json.dumps({"binding": args.binding, "task": args.task, **result}), flush=True)
    sys.stdout.flush()
    os._exit(0)  # the bindings' threads would otherwise hold the exit of 50K channels


if __name__ == "__main__":
    main()

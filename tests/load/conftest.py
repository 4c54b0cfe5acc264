"""What the load and proxy tests share: a real daphne on this run's database and Redis prefix,
and the value cache filled and updated as the monitor does it."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from monitor import events
from monitor.values import pack
from squirrel.limits import DAPHNE_OPTIONS
from tests.e2e.stack import DAPHNE, Proc, wait_for
from tests.epics import free_port
from tests.processes import worker_env

APP = "squirrel.asgi:application"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def daphne(**env: str) -> Iterator[tuple[Proc, int]]:
    """daphne on a free port with this run's database and Redis prefix and ``env`` on top;
    every other setting at its default. Stopped at the end."""
    port = free_port()
    args = [DAPHNE, "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS, APP]
    proc = Proc("web", args, worker_env(**env)).start()
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health"), 30, "daphne answers",
                 context=proc.tail)  # fmt: skip
        yield proc, port
    finally:
        proc.stop()


def publish(client: Any, values: dict[str, float]) -> None:
    """One flush as the monitor makes it: the cache hash, then the published batch."""
    now = time.time()
    packed = {
        name: pack({"value": value, "connected": True, "updated_at": now, "timestamp": now,
                    "status": 0, "severity": 0, "units": "mA", "precision": 3})
        for name, value in values.items()
    }  # fmt: skip
    pipe = client.pipeline(transaction=False)
    pipe.hset(events.values_hash(), mapping=packed)
    pipe.publish(events.updates_channel(), events.update_batch(now, packed))
    pipe.execute()

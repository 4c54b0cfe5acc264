"""``manage.py monitor`` as real processes: leader, standby, takeover, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from monitor import events, values
from pvs.services import pv_create
from tests.monitor.test_ca import SoftIoc, ioc  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    db = settings.DATABASES["default"]
    url = f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "SQUIRREL_DATABASE_URL": url,
        "SQUIRREL_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    }


def _monitor(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "monitor", "--max-seconds", "60", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait(predicate, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def _holder(redis_client) -> str | None:
    value = redis_client.get(events.lock_key(0))
    return value.decode() if value else None


@pytest.mark.epics
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_standby_takes_over_when_leader_is_killed(ioc, redis_client):  # noqa: F811
    pv_create(setpoint_address=ioc.name("AO"), readback_address=ioc.name("RB"))
    first = _monitor()
    second = None
    try:
        _wait(lambda: redis_client.hexists(events.values_hash(), ioc.name("RB")), 30)
        leader = _holder(redis_client)
        assert leader and f":{first.pid}:" in leader
        second = _monitor()
        time.sleep(3)  # the standby is up and polling the lock
        assert second.poll() is None
        assert _holder(redis_client) == leader  # still the first one
        redis_client.hdel(events.values_hash(), ioc.name("RB"))

        first.send_signal(signal.SIGKILL)
        first.wait(5)
        killed = time.monotonic()
        _wait(lambda: f":{second.pid}:" in (_holder(redis_client) or ""), 15)
        takeover = time.monotonic() - killed
        _wait(lambda: redis_client.hexists(events.values_hash(), ioc.name("RB")), 10)
        print(f"standby took over {takeover:.2f} s after SIGKILL of the leader")
        assert takeover <= 10.0
        entry = values.unpack(redis_client.hget(events.values_hash(), ioc.name("RB")))
        assert entry["connected"] is True and entry["value"] == 1.5
        stats = redis_client.hgetall(events.stats_key(0))
        assert f":{second.pid}:" in stats[b"leader"].decode()

        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        assert redis_client.get(events.lock_key(0)) is None  # released on SIGTERM
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.mark.django_db(transaction=True)
def test_sigint_stops_a_leader_with_exit_zero_and_releases_the_lock(redis_client):
    proc = _monitor()
    try:
        _wait(lambda: redis_client.get(events.heartbeat_key(0)) is not None, 30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert redis_client.get(events.lock_key(0)) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(
    "args", [["--shards", "0"], ["--shards", "2", "--shard", "2"], ["--max-seconds", "0"]]
)
def test_bad_arguments_are_refused(args):
    with pytest.raises(CommandError):
        call_command("monitor", *args)

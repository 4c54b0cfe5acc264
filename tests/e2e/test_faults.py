"""Fault tests on the whole stack as real processes (issue: "Fault tests").

One small stack for the module (``fault_stack``: 200 devices, a leader monitor and a standby,
a worker, daphne, a private redis-server). Each test injects one fault, measures how long the
system takes to cope (a ``FIGURE:`` line) against the issue's bound, and leaves the stack
healthy again for the next test (each starts by waiting for a full, connected cache).
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime

import pytest

from monitor import sim
from tests.e2e.stack import FAULT_COOL_DOWN, Reply, Stack, admin_connect, figure, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.epics]

TAKEOVER_BOUND = 10.0  # s: monitor leader killed -> updates resume
DISCONNECT_BOUND = 5.0  # s: IOC killed -> PVs disconnected in the cache
REFILL_BOUND = 30.0  # s: Redis back -> cache refilled
ANSWER_BOUND = 5.0  # s: longest answer of a degraded endpoint
STALE = 15.0  # s: SQUIRREL_JOB_HEARTBEAT_STALE's default, which the stack keeps
STALE_BOUND = STALE + 2.0  # s: worker killed -> its job failed (last beat <= 1 s before)


def _enveloped_error(reply: Reply, status: int) -> None:
    body = reply.body
    assert reply.status == status, reply.summary()
    assert isinstance(body, dict), reply.summary()
    assert body["errorCode"] == status and body["payload"] is None, reply.summary()
    assert body["errorMessage"] and body["detail"] == body["errorMessage"], reply.summary()


def _clean_answer(reply: Reply) -> None:
    """Success in the envelope, or a 503 in it: never a 500 nor a traceback page."""
    if reply.status == 200:
        reply.payload()
    else:
        _enveloped_error(reply, 503)


def test_monitor_leader_killed_standby_takes_over(fault_stack: Stack) -> None:
    stack, api = fault_stack, fault_stack.api
    stack.wait_filled(30)
    leader = api.get("/v1/health/monitor/status").body["leader"]
    running = [m for m in stack.monitors if m.running]
    first = next(m for m in running if f":{m.pid}:" in leader)
    standbys = [m for m in running if m is not first]
    assert standbys, "the stack has no standby monitor"
    device = stack.devices_of("analog", 1, start=10)[0]
    name, base = device.setpoint, stack.ioc.value(device.setpoint)
    assert name is not None

    first.kill()
    killed = time.monotonic()
    stack.ioc.write(name, base + 7.25)  # changed while no monitor leads
    wait_for(lambda: stack.live_value(name) == pytest.approx(base + 7.25), TAKEOVER_BOUND,
             "the standby takes over and the change reaches the cache",
             context=stack.tails)  # fmt: skip
    takeover = time.monotonic() - killed
    now_leading = api.get("/v1/health/monitor/status").body
    assert any(f":{m.pid}:" in now_leading["leader"] for m in standbys), now_leading
    assert now_leading["status"] == "healthy", now_leading

    # Updates keep flowing from the new leader.
    stack.ioc.write(name, base + 3.5)
    latency = wait_for(lambda: stack.live_value(name) == pytest.approx(base + 3.5), 5,
                       "an update through the new leader", context=stack.tails)  # fmt: skip
    figure(
        f"monitor leader SIGKILL: standby took over, a value changed at the kill in the "
        f"cache after {takeover:.2f} s (bound {TAKEOVER_BOUND:.0f} s); next update "
        f"{latency * 1000:.0f} ms"
    )
    assert takeover <= TAKEOVER_BOUND
    stack.ioc.write(name, base)
    stack.standby_start()  # a standby again for whatever follows


def test_worker_killed_mid_snapshot_is_failed_and_not_resurrected(fault_stack: Stack) -> None:
    stack, api = fault_stack, fault_stack.api
    stack.wait_filled(30)
    # A few catalog PVs nobody serves: their direct reads wait the whole timeout (4 s here),
    # which keeps the capture running long enough to kill its worker in the middle.
    ghost_ioc = f"G{secrets.token_hex(3).upper()}:NONE"
    ghosts = [{"setpointAddress": f"{ghost_ioc}:DEV{i}:SP"} for i in range(5)]
    ghost_ids = [pv["id"] for pv in api.post("/v1/pvs/multi", ghosts).payload()]
    title = f"worker killed {ghost_ioc}"
    try:
        stack.workers_stop()
        first = stack.worker_start(SQUIRREL_EPICS_TIMEOUT="4")
        job_id = api.post("/v1/snapshots", {"title": title}).payload()["jobId"]
        seen: dict = {}

        def reading() -> bool:
            seen.update(stack.job(job_id))
            return seen["status"] == "running" and seen["progress"] >= 20

        wait_for(reading, 30, "the capture reads over CA", interval=0.02,
                 context=lambda: f"{seen}\n{stack.tails()}")  # fmt: skip
        first.kill()
        killed = time.monotonic()
        assert stack.job(job_id)["status"] == "running"  # its heartbeat is still fresh

        # No worker runs until the polls have failed the job (here the visibility timeout,
        # 10 s, is shorter than the stale bound, and a worker taking the redelivered message
        # first would simply run the job again).
        done = stack.wait_job(job_id, STALE_BOUND + 5)
        failed_after = time.monotonic() - killed
        assert done["status"] == "failed", (done, stack.tails())
        assert "no snapshot was saved" in done["error"], done
        assert failed_after <= STALE_BOUND, failed_after
        assert not [s for s in api.get("/v1/snapshots").payload() if s["title"] == title]

        # The message comes back to a new worker, which leaves the failed job alone.
        second = stack.worker_start(SQUIRREL_EPICS_TIMEOUT="4")
        wait_for(lambda: "already finished; not running it again" in second.output(), 30,
                 "the redelivered message is skipped", context=stack.tails)  # fmt: skip
        job = stack.job(job_id)
        assert (job["status"], job["error"]) == ("failed", done["error"]), job
        assert not [s for s in api.get("/v1/snapshots").payload() if s["title"] == title]
        assert stack.sql("SELECT attempts FROM job WHERE id = %s", (job_id,)) == [(1,)]
        figure(
            f"worker SIGKILL mid-snapshot: job failed {failed_after:.2f} s after the kill "
            f"(heartbeat stale after {STALE:.0f} s), no snapshot; the redelivered message "
            f"left it failed (1 attempt)"
        )
    finally:
        for pv_id in ghost_ids:
            api.delete(f"/v1/pvs/{pv_id}")
        stack.workers_stop()
        stack.worker_start()


def test_ioc_killed_then_restarted(fault_stack: Stack) -> None:
    stack, api, ioc = fault_stack, fault_stack.api, fault_stack.ioc
    stack.wait_filled(30)
    device = stack.devices_of("analog", 1, start=20)[0]
    name = device.setpoint
    assert name is not None
    before = stack.live_value(name)

    ioc.kill()
    killed = time.monotonic()
    down = wait_for(
        lambda: api.get("/v1/health/disconnected").body["count"] == len(stack.addresses),
        DISCONNECT_BOUND, "every channel disconnected in the cache", context=stack.tails,
    )  # fmt: skip
    entry = stack.live([name])[name]
    assert entry["connected"] is False and entry["error"], entry

    # A snapshot still completes: each value is the last cached one, marked stale.
    started = time.monotonic()
    job = stack.snapshot("IOC down", timeout=60)
    snapshot_seconds = time.monotonic() - started
    summary = stack.snapshot_summary(job["resultId"])
    assert summary["pvCount"] == stack.devices
    assert summary["staleCount"] == len(stack.addresses), summary
    assert (summary["liveCount"], summary["failedCount"]) == (0, 0), summary
    row = next(
        r
        for r in api.get(f"/v1/snapshots/{job['resultId']}").payload()["pvValues"]
        if r["pvName"] == name
    )
    assert row["setpointValue"]["value"] == pytest.approx(before)
    assert row["setpointValue"]["error"].startswith("Direct read failed"), row
    # ... and the direct reads that failed opened this IOC's circuit breaker.
    breaker = stack.circuit()
    assert breaker is not None and breaker["state"] == "open", breaker
    assert breaker["failure_count"] >= 5, breaker
    opened_at = datetime.fromisoformat(breaker["opened_at"]).timestamp()
    opened = time.monotonic() - killed

    ioc.restart()
    back = time.monotonic()
    reconnect = stack.wait_filled(15)
    assert stack.live_value(name) == pytest.approx(sim.base_value(device.index))
    # The breaker lets a trial call through once its cool-down has passed; nothing changes
    # before that, so wait for that instant rather than poll.
    time.sleep(max(0.0, opened_at + FAULT_COOL_DOWN - time.time()))
    job = stack.snapshot("IOC back", use_cache=False, timeout=60)
    summary = stack.snapshot_summary(job["resultId"])
    assert summary["rereadCount"] == len(stack.addresses), summary
    breaker = stack.circuit()
    assert breaker is not None and breaker["state"] == "closed", breaker
    closed = time.monotonic() - back
    figure(
        f"IOC SIGKILL: {len(stack.addresses)} channels disconnected in the cache after "
        f"{down:.2f} s (bound {DISCONNECT_BOUND:.0f} s); snapshot with the IOC down completed "
        f"in {snapshot_seconds:.2f} s (all stale); breaker open {opened:.2f} s after the kill; "
        f"IOC restarted: every channel reconnected in {reconnect:.2f} s; breaker closed "
        f"{closed:.2f} s after the restart (cool-down {FAULT_COOL_DOWN:.0f} s)"
    )


def test_postgres_connections_dropped(fault_stack: Stack) -> None:
    stack, api = fault_stack, fault_stack.api
    stack.wait_filled(30)
    job = stack.snapshot("before the drop")  # the worker and daphne hold connections now
    snap_id = job["resultId"]
    reads = [
        "/v1/pvs?pvName=",
        "/v1/pvs/paged?pvName=&pageSize=5",
        "/v1/snapshots",
        f"/v1/snapshots/{snap_id}",
        f"/v1/snapshots/{snap_id}/compare/live",
        f"/v1/jobs/{job['id']}",
    ]
    for path in reads:
        api.get(path).payload()

    with admin_connect() as admin:
        terminated = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (stack.db_name,),
        ).fetchall()
    dropped = time.monotonic()
    assert len(terminated) >= 2, terminated  # at least daphne's and the worker's

    # Right after: each request succeeds (Django reconnects) or fails cleanly with a 503.
    first = {path: api.get(path) for path in reads}
    first["POST /v1/tags"] = api.post("/v1/tags", {"name": f"after drop {secrets.token_hex(3)}"})
    for path, reply in first.items():
        assert reply.seconds < 10, (path, reply.summary())
        _clean_answer(reply)

    # ... and the next ones recover.
    def all_ok() -> bool:
        return all(api.get(path).status == 200 for path in reads)

    wait_for(all_ok, 15, "every endpoint answers again", interval=0.2, context=stack.tails)
    recovered = time.monotonic() - dropped
    job = stack.snapshot("after the drop", timeout=60)
    job_done = time.monotonic() - dropped
    assert stack.snapshot_summary(job["resultId"])["pvCount"] == stack.devices
    statuses = sorted({r.status for r in first.values()})
    figure(
        f"PostgreSQL drop ({len(terminated)} backends terminated): first requests answered "
        f"{statuses}, every endpoint 200 {recovered:.2f} s after the drop, a new snapshot "
        f"job completed {job_done:.2f} s after it"
    )


def test_redis_restarted(fault_stack: Stack) -> None:
    stack, api = fault_stack, fault_stack.api
    assert stack.redis is not None  # a private redis-server, never the shared one
    stack.wait_filled(30)
    marks = {m: m.total for m in stack.monitors if m.running}  # output so far
    worker = stack.workers[-1]
    worker_mark = len(worker.lines)
    stack.redis.kill()
    killed = time.monotonic()

    replies = {
        "heartbeat": api.get("/v1/health/heartbeat"),
        "summary": api.get("/v1/health/summary"),
        "monitor": api.get("/v1/health/monitor"),
        "monitor status": api.get("/v1/health/monitor/status"),
        "circuits": api.get("/v1/health/circuits"),
        "disconnected": api.get("/v1/health/disconnected"),
        "cache status": api.get("/v1/pvs/cache/status"),
        "live": api.post("/v1/pvs/live", {"pv_names": stack.addresses[:10]}),
        "pvs": api.get("/v1/pvs?pvName="),
        "snapshot": api.post("/v1/snapshots", {"title": "while Redis is down"}),
    }
    for what, reply in replies.items():
        assert reply.status in (200, 503), (what, reply.summary())
        assert reply.seconds < ANSWER_BOUND, (what, reply.summary())
    beat = replies["heartbeat"].payload()  # enveloped, always 200
    assert beat["alive"] is False and beat["error"], beat
    assert replies["summary"].status == 200
    assert replies["summary"].body["status"] in ("degraded", "unhealthy"), replies["summary"]
    assert replies["monitor"].status == 503 and replies["monitor"].body["detail"]
    assert replies["monitor status"].body["status"] == "unknown"
    assert replies["circuits"].body["error"], replies["circuits"].summary()
    assert replies["disconnected"].status == 503
    assert replies["cache status"].payload()["status"] == "disconnected"
    _enveloped_error(replies["live"], 503)
    assert len(replies["pvs"].payload()) == stack.devices  # PostgreSQL still serves the catalog
    # A job that cannot be queued is answered, and reported failed saying why.
    queued = replies["snapshot"].payload()
    failed = stack.job(queued["jobId"])
    assert failed["status"] == "failed" and "queue" in failed["error"], failed

    # Redis stays down until the leader monitor and the worker have both run into it.
    wait_for(
        lambda: any("heartbeat failed" in m.output_since(n) for m, n in marks.items())
        and "Connection to broker lost" in "".join(worker.lines[worker_mark:]),
        15, "the monitor and the worker notice the outage", context=stack.tails,
    )  # fmt: skip
    stack.redis.start()  # the same port, empty
    back = time.monotonic()
    refill = stack.wait_filled(REFILL_BOUND)
    summary = api.get("/v1/health/summary").body
    assert summary["status"] == "healthy", summary
    job = stack.snapshot("after the Redis restart", timeout=60)
    job_done = time.monotonic() - back
    assert stack.snapshot_summary(job["resultId"])["liveCount"] == len(stack.addresses)
    figure(
        f"Redis SIGKILL + restart: degraded answers in at most "
        f"{max(r.seconds for r in replies.values()):.2f} s while down (no 500); cache "
        f"refilled ({len(stack.addresses)} channels) {refill:.2f} s after Redis came back "
        f"(bound {REFILL_BOUND:.0f} s; down {back - killed:.1f} s); a snapshot job completed "
        f"{job_done:.2f} s after"
    )

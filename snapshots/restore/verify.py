"""Verification of a chunk of writes: put with completion, read the setpoints back, and wait a
settle time for readbacks to follow, judging each PV with THE tolerance rule.

A put that fails is ``write-failed`` when it was refused or never sent, ``timed-out`` when its
channel did not connect in time (never sent either), and ``write-unknown`` when it was sent and
never answered (the IOC died, hung or dropped the connection first): it may have been applied,
so the report says unknown, not failed. Neither kind is read back.

A setpoint that is written and reads back at its saved value is a success whatever its readback
does. The readback is then judged against the PV's tolerance when one is configured (and waited
for up to the settle time); with none, it is compared at once and never waited for. Either way a
readback that differs is ``readback-differs``: a success with a warning, both values recorded.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings

from monitor import values
from monitor.bridge import Bridge, PutResult
from snapshots.codec import side_from_entry
from snapshots.models import Outcome
from snapshots.restore.records import Clock, Item, Result
from snapshots.tolerance import within_tolerance
from squirrel.api import dumps

# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
SETTLE_TIME = 2.0  # seconds a readback may take to follow its setpoint
SETTLE_POLL = 0.2


def settle_time() -> float:
    return float(getattr(settings, "RESTORE_SETTLE_TIME", SETTLE_TIME))


def _entry_wire(entry: values.Entry | None) -> Any:
    side = side_from_entry(entry) if entry is not None else None
    return values.finite(side.wire) if side is not None else None


def _read_error(entry: values.Entry | None) -> str:
    return (entry or {}).get("error") or values.DISCONNECTED


def _failed_put_outcome(put: PutResult) -> Outcome:
    """The outcome of a put that did not succeed (module docstring)."""
    if put.unknown:
        return Outcome.WRITE_UNKNOWN
    return Outcome.TIMED_OUT if put.timed_out else Outcome.WRITE_FAILED


def _readback_differs(result: Result, *, after: float | None) -> None:
    """A verified setpoint whose readback differs: a warning with both values, not a failure.
    ``after`` is the settle time waited (a PV with a tolerance), None when not waited."""
    item = result.item
    waited = f" after {after:g} s" if after is not None else " (no tolerance configured)"
    result.outcome = Outcome.READBACK_DIFFERS
    result.error = (
        f"setpoint verified at {dumps(result.setpoint)[:200]}; readback {item.readback_address} "
        f"is {dumps(result.readback)[:200]}{waited}"
    )


def verify_chunk(
    *,
    ca: Bridge,
    items: list[Item],
    timeout: float,
    settle: float,
    clock: Clock | None = None,
) -> list[Result]:
    """Write ``items`` with completion, then read back and judge each one."""
    clock = clock or Clock()
    # Only ``write`` items reach here, and a write always has a setpoint address (plan.py).
    targets: dict[str, Any] = {item.setpoint_address: item.saved for item in items}  # type: ignore[misc]
    puts = ca.write(targets, timeout)
    clock.lap("write")
    results: dict[int, Result] = {}
    written: list[Item] = []
    for item in items:
        put = puts[item.setpoint_address]  # type: ignore[index]
        if put.ok:
            written.append(item)
            continue
        results[item.id] = Result(
            item=item,
            outcome=_failed_put_outcome(put),
            written=item.saved,
            error=put.error,
        )
    names = [i.setpoint_address for i in written] + [
        i.readback_address for i in written if i.readback_address
    ]
    read = ca.read(names, timeout)  # type: ignore[arg-type]
    clock.lap("read_back")
    waiting: list[Result] = []
    for item in written:
        sp_entry = read.get(item.setpoint_address)  # type: ignore[arg-type]
        sp_value = _entry_wire(sp_entry)
        result = Result(item=item, outcome=Outcome.VERIFIED, written=item.saved, setpoint=sp_value)
        results[item.id] = result
        if sp_value is None:
            result.outcome = Outcome.TIMED_OUT
            result.error = f"written, but reading the setpoint back failed: {_read_error(sp_entry)}"
            continue
        if not within_tolerance(item.saved, sp_value, abs_tol=item.abs_tol, rel_tol=item.rel_tol):
            result.outcome = Outcome.MISMATCH
            result.error = (
                f"setpoint reads back {dumps(sp_value)[:200]} after writing "
                f"{dumps(item.saved)[:200]} (clamped or rejected by the IOC)"
            )
            continue
        if item.readback_address:
            result.readback = _entry_wire(read.get(item.readback_address))
            if not within_tolerance(
                item.saved, result.readback, abs_tol=item.abs_tol, rel_tol=item.rel_tol
            ):
                if item.abs_tol > 0 or item.rel_tol > 0:
                    waiting.append(result)  # a tolerance says the readback should follow
                else:
                    _readback_differs(result, after=None)
    deadline = time.monotonic() + settle
    while waiting and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL)
        again = ca.read([r.item.readback_address for r in waiting], timeout)  # type: ignore[misc]
        still = []
        for result in waiting:
            result.readback = _entry_wire(again.get(result.item.readback_address))  # type: ignore[arg-type]
            item = result.item
            if not within_tolerance(
                item.saved, result.readback, abs_tol=item.abs_tol, rel_tol=item.rel_tol
            ):
                still.append(result)
        waiting = still
    clock.lap("verify")
    for result in waiting:
        _readback_differs(result, after=settle)
    return [results[item.id] for item in items]

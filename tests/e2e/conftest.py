"""Fixtures of the end-to-end tests: whole stacks of real processes (tests.e2e.stack).

Each stack is module-scoped: its processes, database, Redis keys (or private redis-server)
and temporary files are gone when the module's tests are done, pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import FAULT_COOL_DOWN, Stack, figure, run_stack

STACK_DEVICES = 3000  # 5,700 channels: setpoint + readback per device, readback only for 10 %
FAULT_DEVICES = 200


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Sim IOC (3,000 devices), monitor, worker and daphne on the shared Redis (own prefix)."""
    with run_stack(devices=STACK_DEVICES) as running:
        figure(
            f"stack of {len(running.addresses)} channels up, catalog imported and cached "
            f"{running.startup_seconds:.1f} s after start"
        )
        yield running


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[Stack]:
    """A small stack for the fault tests: a leader monitor and a standby, a private
    redis-server, and a worker whose direct reads give up fast (1 s) in chunks of 50 (so
    that one snapshot against a dead IOC makes several calls, enough to open its breaker)."""
    with run_stack(
        devices=FAULT_DEVICES,
        monitors=2,
        private_redis=True,
        worker_env={
            "SQUIRREL_EPICS_TIMEOUT": "1",
            "SQUIRREL_EPICS_CONCURRENCY": "50",
            "SQUIRREL_CIRCUIT_COOL_DOWN": str(FAULT_COOL_DOWN),
        },
    ) as running:
        yield running

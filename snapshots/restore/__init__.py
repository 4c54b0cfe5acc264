"""Restore that operators can trust (issue 5): plan, execute, verify, revert, audit.

1. **Plan** (``plan.restore_plan_create``): for each selected PV of a snapshot, compare the
   saved setpoint with the *current* live value (the monitor's cache when the monitor is
   alive, else a direct Channel Access read) and decide ``write``, ``skip-equal`` (within the
   PV's tolerance, ``snapshots.tolerance.within_tolerance``), ``skip-read-only``,
   ``skip-no-value`` or ``disconnected``. The plan and its items are stored (COPY).
2. **Request** (``request``: ``restore_request`` / ``restore_plan_execute_request`` /
   ``restore_revert_request``): in ONE transaction create the Restore audit row, its Job and a
   claim on every PV it may write (``claims``: ``RestoreClaim``, primary key = PV id,
   conditional insert): an overlapping restore that is pending or running makes the second
   request a 409, and nothing of it is written. An ``Idempotency-Key`` maps to one Restore
   (unique column). The task is enqueued on commit.
3. **Run** (``run.restore_run``, the task's body, and ``execute``): claim the Restore row
   (pending -> running, conditional UPDATE: a redelivered message never replays writes),
   build the plan if the request had none, capture a **safety snapshot** (``safety``) of
   exactly the PVs about to be written (``snapshots.capture.values_collect`` while the monitor
   is alive, else a direct read on the restore's own client; stored with
   ``snapshots.storage.snapshot_values_write``, kind ``safety``, linked to the Restore and
   committed before any write), then per chunk: note the chunk as attempted, put with
   completion, read back setpoints (and readbacks within tolerance, re-reading up to a settle
   time: ``verify``) and COPY the chunk's outcomes (``records``). A put refused or never sent
   is ``write-failed``; one sent and never answered (the IOC died or hung) is
   ``write-unknown``: it may have been applied, and the report says unknown, not failed. A
   heartbeat thread keeps ``heartbeat_at`` fresh (``jobs.heartbeat``);
   ``run.restore_reap_orphans`` fails restores whose worker died,
   recording ``interrupted`` / ``not-attempted`` for what has no outcome.
4. **Revert** restores the safety snapshot through the same path.

Channel Access and the monitor's cache are reached only through ``epics``. Callers import
from the modules; the names below are kept here for callers outside snapshots/ that still
use ``snapshots.restore.<name>`` (tests/fuzz).
"""

from snapshots.restore.plan import restore_plan_create
from snapshots.restore.request import restore_request
from snapshots.restore.run import restore_run
from snapshots.restore.selection import Selection

__all__ = ["Selection", "restore_plan_create", "restore_request", "restore_run"]

"""``manage.py take_snapshot --title T``: capture a snapshot and show the job's progress bar."""

from __future__ import annotations

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from jobs.models import Job
from jobs.services import job_get_current
from snapshots import capture, services
from snapshots.models import Snapshot
from squirrel.exceptions import SquirrelError

BAR_WIDTH = 40


def _bar(progress: int, message: str | None) -> str:
    filled = int(BAR_WIDTH * progress / 100)
    return (
        f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {progress:3d}% {(message or '')[:60]:<60}"
    )


class Command(BaseCommand):
    help = "Take a snapshot of every catalog PV (queued for a worker, or --sync in-process)."

    def add_arguments(self, parser):
        parser.add_argument("--title", required=True)
        parser.add_argument("--comment", default=None, help="the snapshot's comment/description")
        parser.add_argument(
            "--no-cache", action="store_true", help="read every PV directly over Channel Access"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--sync", action="store_true", help="capture in this process instead of a worker"
        )
        mode.add_argument(
            "--no-wait", action="store_true", help="queue the job, print its id and exit"
        )
        parser.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to wait for the job"
        )

    def handle(self, *args, **opts):
        use_cache = not opts["no_cache"]
        try:
            if opts["sync"]:
                snapshot = capture.snapshot_capture(
                    title=opts["title"],
                    description=opts["comment"],
                    use_cache=use_cache,
                    created_by="cli",
                    progress=self._draw,
                )
                self.stdout.write(_bar(100, "done") + "\n")
                self._summary(snapshot.pk)
                return
            job = services.snapshot_create_enqueue(
                title=opts["title"], description=opts["comment"], use_cache=use_cache,
                created_by="cli",
            )  # fmt: skip
        except SquirrelError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"job {job.pk} queued\n")
        if opts["no_wait"]:
            return
        self._follow(str(job.pk), timeout=opts["timeout"])

    def _draw(self, progress: int, message: str | None = None) -> None:
        self.stdout.write(_bar(progress, message), ending="")
        self.stdout.flush()

    def _follow(self, job_id: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            job = job_get_current(job_id=job_id)  # a dead worker's job is failed
            self._draw(job.progress, job.message)
            if job.status == Job.Status.COMPLETED:
                self.stdout.write("\n")
                self._summary(job.result_id)
                return
            if job.status == Job.Status.FAILED:
                self.stdout.write("\n")
                raise CommandError(f"job {job_id} failed: {job.error}")
            if time.monotonic() > deadline:
                self.stdout.write("\n")
                raise CommandError(
                    f"job {job_id} still {job.status} after {timeout:.0f} s (is a worker running?)"
                )
            time.sleep(0.25)

    def _summary(self, snapshot_id) -> None:
        s = Snapshot.objects.get(pk=snapshot_id)
        self.stdout.write(
            f"snapshot {s.pk} '{s.title}': {s.pv_count} PVs "
            f"(live {s.live_count}, re-read {s.reread_count}, stale {s.stale_count}, "
            f"failed {s.failed_count})\n"
        )
        sys.stdout.flush()

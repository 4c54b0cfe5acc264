"""``manage.py restore SNAPSHOT_ID [--plan-only] [--tag ...] [--pv ...] [--yes]``.

Prints the plan summary, asks for confirmation (unless ``--yes``), then runs the restore in this
process (the same verified path as the API: safety snapshot, put with completion, read back),
showing progress and the outcome table. Exit status 1 when any PV failed.
"""

from __future__ import annotations

import getpass
import threading
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from jobs.models import Job
from snapshots.models import PlanAction, Restore
from snapshots.restore.plan import restore_plan_create
from snapshots.restore.records import failures_list, unknown_count, warning_count
from snapshots.restore.request import restore_plan_execute_request
from snapshots.restore.run import restore_run
from snapshots.restore.selection import selection_parse
from squirrel.exceptions import SquirrelError
from tags.models import Tag

SHOW = 20


def _tag_ids(values: list[str]) -> list[str]:
    ids = []
    for value in values:
        tags = list(Tag.objects.filter(pk=value)) if _is_uuid(value) else []
        if not tags:
            group, _, name = value.rpartition(":")
            tags = list(Tag.objects.filter(name__iexact=name))
            if group:
                tags = [t for t in tags if t.group.name.lower() == group.lower()]
        if len(tags) != 1:
            raise CommandError(f"--tag {value!r} matches {len(tags)} tags (use GROUP:NAME or id)")
        ids.append(str(tags[0].pk))
    return ids


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class Command(BaseCommand):
    help = "Plan and run a verified restore of a snapshot's setpoints."

    def add_arguments(self, parser):
        parser.add_argument("snapshot_id")
        parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
        parser.add_argument(
            "--tag", action="append", default=[], help="only PVs with any of these tags "
            "(id, NAME or GROUP:NAME; repeatable)"
        )  # fmt: skip
        parser.add_argument("--pv", action="append", default=[], help="only these PV ids")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args, snapshot_id, plan_only, tag, pv, yes, **options):
        user = f"cli:{getpass.getuser()}"
        try:
            selection = selection_parse(
                pv_ids=pv or None, tag_filters=[_tag_ids(tag)] if tag else None
            )
            plan = restore_plan_create(
                snapshot_id=snapshot_id, selection=selection, created_by=user, actor=user
            )
        except SquirrelError as exc:
            raise CommandError(exc.message) from exc
        self._plan_print(plan)
        writes = plan.counts.get("write", 0)
        if plan_only:
            return
        if writes == 0:
            self.stdout.write("Nothing to write.")
            return
        if not yes:
            answer = input(f"Write {writes:,} setpoints to the machine? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                self.stdout.write("Not restored.")
                return
        try:
            restore = restore_plan_execute_request(
                plan_id=plan.pk, created_by=user, enqueue=False, actor=user
            )
        except SquirrelError as exc:
            raise CommandError(exc.message) from exc
        restore = self._run(restore)
        self._outcome_print(restore)
        if restore.status != Restore.Status.COMPLETED or restore.failure_count:
            raise SystemExit(1)

    def _plan_print(self, plan) -> None:
        self.stdout.write(
            f"Plan {plan.pk} for snapshot '{plan.snapshot.title}': {plan.total:,} PVs "
            f"({plan.elapsed:.2f} s)"
        )
        for name, count in plan.counts.items():
            self.stdout.write(f"  {name:<16} {count:>8,}")
        rows = plan.items.filter(action=PlanAction.WRITE).order_by("pv_name")[:SHOW]
        if rows:
            self.stdout.write(f"  {'PV':<40} {'saved':>14} {'live':>14} {'delta':>10}")
            for item in rows:
                delta = f"{item.delta:.4g}" if item.delta is not None else ""
                self.stdout.write(
                    f"  {item.pv_name:<40} {(item.saved or '')[:14]:>14} "
                    f"{(item.live or '')[:14]:>14} {delta:>10}"
                )

    def _run(self, restore: Restore) -> Restore:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                restore_run(restore_id=str(restore.pk))
            except BaseException as exc:  # shown below
                failure.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run, name="restore")
        thread.start()
        last = None
        # A new restore always has its job; without one there is no progress to show.
        jobs = Job.objects.filter(pk=restore.job_id) if restore.job_id else Job.objects.none()
        while thread.is_alive():
            thread.join(0.5)
            job = jobs.values_list("progress", "message").first()
            if job and job != last:
                self.stdout.write(f"  {job[0]:>3}%  {job[1] or ''}")
                last = job
        restore.refresh_from_db()
        if failure:
            self.stderr.write(f"Restore failed: {failure[0]}")
        return restore

    def _outcome_print(self, restore: Restore) -> None:
        unknown = unknown_count(restore)  # sent, never answered: maybe applied, not "failed"
        unknown_text = f", {unknown:,} unknown" if unknown else ""
        warnings = warning_count(restore)  # verified setpoints whose readback differs
        warning_text = f" ({warnings:,} with a readback that differs)" if warnings else ""
        self.stdout.write(
            f"Restore {restore.pk}: {restore.status}; {restore.success_count:,} verified"
            f"{warning_text}, {restore.failure_count - unknown:,} failed{unknown_text} of "
            f"{restore.total:,}; safety snapshot {restore.safety_snapshot_id}"
        )
        for name, count in restore.counts.items():
            if count:
                self.stdout.write(f"  {name:<18} {count:>8,}")
        failures = failures_list(restore=restore, limit=200)
        if failures:
            self.stdout.write(f"  {'PV':<40} {'outcome':<14} error")
            for f in failures:
                self.stdout.write(f"  {f['pvName']:<40} {f['outcome']:<14} {f['error']}")

"""``manage.py import_fastapi_squirrel --dsn URL``: move a FastAPI Squirrel's catalog, snapshots
and API keys onto this one, ids kept (``snapshots.fastapi_import``; README "Moving from the
FastAPI Squirrel")."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pvs.management.commands.import_pvs import Progress
from snapshots.fastapi_import import (
    KNOWN_HEAD,
    PHASES,
    SourceError,
    fastapi_import,
    summary_lines,
)


def _phases(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PHASES]
    if unknown or not names:
        raise CommandError(f"--only takes a comma-separated list of {', '.join(PHASES)}")
    return names


class Command(BaseCommand):
    help = (
        "Import a FastAPI Squirrel's database (read-only, one consistent view): PVs, tag groups, "
        "tags, snapshots with every value, API keys; ids kept. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dsn", required=True, help="the FastAPI Squirrel's PostgreSQL URL")
        parser.add_argument("--dry-run", action="store_true", help="run every phase, roll back")
        parser.add_argument(
            "--only", default=",".join(PHASES), help=f"phases to run, of {','.join(PHASES)}"
        )
        parser.add_argument(
            "--update",
            action="store_true",
            help="refresh rows that exist in both and differ (PV fields and tags, tag and "
            "group names, snapshot titles and comments, key names/scopes/active flags)",
        )
        parser.add_argument(
            "--sample", type=int, default=500, help="values compared with the source at the end"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")

    def handle(self, *args: Any, **options: Any) -> None:
        phases = _phases(options["only"])
        progress = Progress(self.stderr._out, not options["no_progress"])
        started = time.monotonic()

        def on_phase(name: str) -> None:
            if progress.last:  # a bar of the phase before is on screen: end its line
                progress.end()
            progress.last = 0.0
            self.stdout.write(f"phase {name} ...")

        try:
            result = fastapi_import(
                dsn=options["dsn"],
                phases=phases,
                update=options["update"],
                dry_run=options["dry_run"],
                sample=options["sample"],
                progress=progress,
                on_phase=on_phase,
            )
        except SourceError as exc:
            raise CommandError(str(exc)) from None
        if progress.last:
            progress.end()
        if result.head != KNOWN_HEAD:
            self.stderr.write(
                f"warning: the source's schema is at {result.head or 'an unknown revision'}, "
                f"this importer knows {KNOWN_HEAD}"
            )
        for line in summary_lines(result.reports):
            self.stdout.write(line)
        seconds = time.monotonic() - started
        if result.conflicts:
            failed = result.reports[-1].name
            for conflict in result.conflicts:
                self.stderr.write(f"conflict: {conflict}")
            raise CommandError(
                f"phase {failed}: {len(result.conflicts)} conflicts, nothing of it was written"
                " (nor of the phases after it)"
            )
        if result.dry_run:
            self.stdout.write(f"dry run, nothing written ({seconds:.1f} s)")
            return
        if result.written == 0:
            self.stdout.write("nothing to write: everything in the source is already here")
        else:
            self.stdout.write(f"{result.written} rows written in {seconds:.1f} s")
        for mismatch in result.mismatches or []:
            self.stderr.write(f"mismatch: {mismatch}")
        if result.mismatches:
            raise CommandError(f"verification failed: {len(result.mismatches)} mismatches")
        self.stdout.write("verified: counts and sampled values equal the source")

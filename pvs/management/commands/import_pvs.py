"""``manage.py import_pvs FILE.csv``: load the PV catalog from CSV (contract §7, superset)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pvs import csvio
from pvs.services import pv_import
from squirrel import audit
from squirrel.exceptions import Invalid


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream: Any, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and 0 < done < total):
            return
        self.last = now
        if total <= 0:
            self.stream.write(f"\r{phase:>9} {done} lines")
            self.stream.flush()
            return
        width = 30
        filled = width * done // total
        percent = 100 * done // total
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{phase:>9} [{bar}] {percent:3d}% {done}/{total}")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Command(BaseCommand):
    help = (
        "Import PVs from CSV: Setpoint, Readback, optional Config, Device, Description, "
        "AbsTolerance, RelTolerance, ReadOnly; every other column is a tag group."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file, or - for stdin")
        parser.add_argument("--dry-run", action="store_true", help="validate and count only")
        parser.add_argument(
            "--update",
            action="store_true",
            help="overwrite description/tags/tolerances/read-only/readback/config of existing PVs",
        )
        parser.add_argument(
            "--no-create-tags",
            action="store_true",
            help="unknown tag groups or tags are errors instead of being created",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def _reading(progress: Progress) -> Any:
        return lambda line: progress("reading", line, 0)

    def handle(self, *args: Any, **options: Any) -> None:
        progress = Progress(self.stderr._out, not options["no_progress"])
        started = time.monotonic()
        try:
            if options["file"] == "-":
                columns, rows = csvio.parse(sys.stdin)
            else:
                with Path(options["file"]).open(newline="", encoding="utf-8-sig") as stream:
                    columns, rows = csvio.parse(stream, progress=self._reading(progress))
        except OSError as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"{options['file']} is not UTF-8: {exc}") from None
        except csvio.CsvError as exc:
            progress.end()
            raise CommandError("invalid CSV:\n" + "\n".join(exc.errors)) from None
        try:
            result = pv_import(
                rows=rows,
                columns=columns,
                create_tags=not options["no_create_tags"],
                update=options["update"],
                dry_run=options["dry_run"],
                progress=progress,
                actor=audit.cli(),
                source=Path(options["file"]).name,
            )
        except Invalid as exc:
            progress.end()
            raise CommandError("invalid CSV:\n" + exc.message) from None
        progress.end()
        prefix = "dry run, nothing written: would have " if options["dry_run"] else ""
        self.stdout.write(
            f"{prefix}{result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged, {result.skipped} skipped (differ; use --update), "
            f"{result.groups_created} tag groups and {result.tags_created} tags created "
            f"in {time.monotonic() - started:.2f} s"
        )

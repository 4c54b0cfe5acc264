"""``manage.py export_snapshot ID [--format csv|json] [--output FILE]``."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from snapshots import export, services
from squirrel.exceptions import SquirrelError


class Command(BaseCommand):
    help = "Write a snapshot with all its values as CSV or JSON (to stdout or --output)."

    def add_arguments(self, parser):
        parser.add_argument("snapshot_id")
        parser.add_argument("--format", choices=export.EXPORT_FORMATS, default="json")
        parser.add_argument("--output", "-o", default=None, help="file to write (default stdout)")

    def handle(self, *args, **opts):
        try:
            snapshot = services.snapshot_get(snapshot_id=opts["snapshot_id"])
        except SquirrelError as exc:
            raise CommandError(exc.message) from exc
        chunks = export.snapshot_export(snapshot=snapshot, fmt=opts["format"])
        if opts["output"]:
            with Path(opts["output"]).open("w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
            self.stderr.write(f"wrote {snapshot.pv_count} PVs to {opts['output']}\n")
        else:
            for chunk in chunks:
                sys.stdout.write(chunk)
            sys.stdout.flush()

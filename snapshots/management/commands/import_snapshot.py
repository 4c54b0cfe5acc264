"""``manage.py import_snapshot FILE [--format csv|json] [--title T]``: an export file read back
as a new snapshot of kind ``imported`` (``snapshots.importer``)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from snapshots import export, importer
from squirrel import audit
from squirrel.exceptions import Invalid


class Command(BaseCommand):
    help = "Import a snapshot from the CSV or JSON that export_snapshot (or the API) wrote."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--format", choices=export.EXPORT_FORMATS, default=None)
        parser.add_argument("--title", default=None, help="default: '<original> (imported)'")

    def handle(self, *args, **opts):
        path = Path(opts["file"])
        try:
            content = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        try:
            snapshot = importer.snapshot_import(
                content=content, fmt=opts["format"], title=opts["title"], actor=audit.cli()
            )
        except Invalid as exc:
            lines = [e["msg"] for e in exc.errors] or [exc.message]
            raise CommandError("nothing imported:\n  " + "\n  ".join(lines)) from exc
        self.stdout.write(f"imported snapshot {snapshot.pk} '{snapshot.title}' "
                          f"with {snapshot.pv_count} values\n")  # fmt: skip

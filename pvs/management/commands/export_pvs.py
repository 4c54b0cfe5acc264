"""``manage.py export_pvs FILE.csv``: write the catalog in the format import_pvs reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pvs import csvio
from pvs.services import pv_export_rows


class Command(BaseCommand):
    help = "Export every PV to CSV (tag groups as columns); import_pvs reads it back exactly."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file to write, or - for stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            header, rows = pv_export_rows()
        except ValueError as exc:
            raise CommandError(f"cannot export: {exc}") from None
        if options["file"] == "-":
            # OutputWrapper is a TextIOBase the stubs do not accept as typing.TextIO
            csvio.write(cast(TextIO, self.stdout), header, rows)
            return
        try:
            with Path(options["file"]).open("w", newline="", encoding="utf-8") as stream:
                csvio.write(stream, header, rows)
        except OSError as exc:
            raise CommandError(f"cannot write {options['file']}: {exc}") from None
        self.stderr.write(f"{len(rows)} PVs written to {options['file']}")

"""``manage.py create_api_key NAME [--read] [--write]``: the bootstrap key (contract §1.6)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from squirrel import services
from squirrel.exceptions import SquirrelError


class Command(BaseCommand):
    help = "Create an API key and print its token (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="application name (unique among active keys)")
        parser.add_argument("-r", "--read", action="store_true", help="grant read access")
        parser.add_argument("-w", "--write", action="store_true", help="grant write access")

    def handle(self, *args, name: str, read: bool, write: bool, **options) -> None:
        if not (read or write):
            raise CommandError("give --read and/or --write: a key needs at least one scope")
        try:
            created = services.api_key_create(app_name=name, read_access=read, write_access=write)
        except SquirrelError as exc:
            raise CommandError(exc.message) from None
        key = created.key
        granted = (("read", key.read_access), ("write", key.write_access))
        scopes = ", ".join(scope for scope, on in granted if on)
        self.stderr.write(f"Created API key {key.pk} for '{key.app_name}' ({scopes}).")
        self.stderr.write("The token is shown only now; store it safely:")
        self.stdout.write(created.token)

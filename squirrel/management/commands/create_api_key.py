"""``manage.py create_api_key NAME [--read] [--write] [--restore] [--admin]``: the bootstrap
key (contract §1.6); ``--restore`` makes a key that may write the machine; ``--admin`` one that
may create and deactivate other keys over the API."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser

from squirrel import services
from squirrel.exceptions import SquirrelError


def cli_creator() -> str:
    """Who a key made on the command line is recorded as: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name, no passwd entry (a container's arbitrary uid)
        return "cli"


class Command(BaseCommand):
    help = "Create an API key and print its token (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="application name (unique among active keys)")
        parser.add_argument("-r", "--read", action="store_true", help="grant read access")
        parser.add_argument("-w", "--write", action="store_true", help="grant write access")
        parser.add_argument(
            "-x",
            "--restore",
            action="store_true",
            help="grant restore access: write the machine (restore, execute and approve plans, "
            "revert)",
        )
        parser.add_argument(
            "-a",
            "--admin",
            action="store_true",
            help="grant admin access: create and deactivate API keys (needs --read or --write)",
        )

    def handle(
        self, *args, name: str, read: bool, write: bool, admin: bool, restore: bool, **options
    ) -> None:
        if not (read or write):
            raise CommandError("give --read and/or --write: a key needs at least one scope")
        try:
            created = services.api_key_create(
                app_name=name,
                read_access=read,
                write_access=write,
                admin_access=admin,
                restore_access=restore,
                created_by=cli_creator(),
            )
        except SquirrelError as exc:
            raise CommandError(exc.message) from None
        key = created.key
        granted = (
            ("read", key.read_access),
            ("write", key.write_access),
            ("restore", key.restore_access),
            ("admin", admin),
        )
        scopes = ", ".join(scope for scope, on in granted if on)
        self.stderr.write(f"Created API key {key.pk} for '{key.app_name}' ({scopes}).")
        self.stderr.write("The token is shown only now; store it safely:")
        self.stdout.write(created.token)

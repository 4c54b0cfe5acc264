"""``manage.py deactivate_api_key ID``: soft-delete a key (it stops authenticating at once)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from squirrel import audit, services
from squirrel.exceptions import SquirrelError


class Command(BaseCommand):
    help = "Deactivate an API key by id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key_id", help="the key's id (see list_api_keys)")

    def handle(self, *args, key_id: str, **options) -> None:
        try:
            key = services.api_key_deactivate(key_id=key_id, current_key_id=None, actor=audit.cli())
        except SquirrelError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Deactivated API key {key.pk} ('{key.app_name}').")

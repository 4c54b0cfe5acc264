"""``manage.py list_api_keys [--active-only]``: every key, never a token."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from squirrel.models import ApiKey


class Command(BaseCommand):
    help = (
        "List API keys: id, name, scopes (r/w/x/a: read/write/restore/admin), state, creation, "
        "creator."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--active-only", action="store_true", help="skip deactivated keys")

    def handle(self, *args, active_only: bool, **options) -> None:
        keys = ApiKey.objects.all()
        if active_only:
            keys = keys.filter(is_active=True)
        for key in keys:
            state = "active" if key.is_active else "inactive"
            created = f"{key.created_at:%Y-%m-%d %H:%M}"
            self.stdout.write(
                f"{key.pk}  {key.app_name:<30}  {key.scope_letters:<4}  {state:<8}  {created}"
                f"  {key.created_by or '-'}"
            )
        if not keys:
            self.stderr.write("No API keys.")

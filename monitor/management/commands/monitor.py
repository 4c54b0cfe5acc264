"""``manage.py monitor``: keep every catalog PV live in Redis (see monitor.runner)."""

from __future__ import annotations

import asyncio
import logging

from django.core.management.base import BaseCommand, CommandError

from monitor import runner


class Command(BaseCommand):
    help = "Subscribe every catalog PV over Channel Access and keep its latest value in Redis."

    def add_arguments(self, parser):
        parser.add_argument("--shards", type=int, default=1, help="number of monitor shards")
        parser.add_argument("--shard", type=int, default=0, help="this process's shard, 0-based")
        parser.add_argument(
            "--max-seconds", type=float, default=None, help="stop after this long (tests)"
        )

    def handle(self, *args, shards: int, shard: int, max_seconds: float | None, **options):
        if shards < 1 or not 0 <= shard < shards:
            raise CommandError("--shards must be >= 1 and --shard in 0..shards-1")
        if max_seconds is not None and max_seconds <= 0:
            raise CommandError("--max-seconds must be positive")
        logging.getLogger("monitor").setLevel(
            logging.INFO if options["verbosity"] < 2 else logging.DEBUG
        )
        code = asyncio.run(runner.run(shards=shards, shard=shard, max_seconds=max_seconds))
        if code:
            raise CommandError(f"monitor exited with {code}")

"""Catalog reads for the monitor process (sync; the runner calls them via sync_to_async), and
the monitor's answers to ``pvs.hooks`` (connected in ``MonitorConfig.ready``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from django.db.models import Count, Max

from monitor import cache, events
from monitor.cache import shard_of
from pvs.models import PV

log = logging.getLogger(__name__)


def monitor_addresses(*, shards: int = 1, shard: int = 0) -> set[str]:
    """Every address of the catalog (setpoint, readback, config; deduplicated) in this shard."""
    rows = PV.objects.values_list("setpoint_address", "readback_address", "config_address")
    addresses = {address for row in rows.iterator(chunk_size=10_000) for address in row if address}
    if shards > 1:
        addresses = {a for a in addresses if shard_of(a, shards) == shard}
    return addresses


def catalog_fingerprint() -> tuple[int, str]:
    """A cheap value that changes whenever PVs are added, removed or edited."""
    row = PV.objects.aggregate(n=Count("id"), last=Max("updated_at"))
    return row["n"], str(row["last"])


def catalog_version_bump(**_: object) -> None:
    """Receiver of ``pvs.hooks.catalog_changed``: bump the catalog version so the monitor
    reloads at once (else it notices on its next fingerprint poll)."""
    try:
        events.sync_redis().incr(events.catalog_version_key())
    except redis.RedisError:
        log.warning("could not bump the catalog version; the monitor reloads on its next poll")


def live_values_wire(addresses: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """The ``pvs.hooks`` live-value reader: cached wire entries, or an error text when Redis
    cannot be read."""
    try:
        return cache.wire_read(addresses), None
    except redis.RedisError as exc:
        return {}, f"Failed to get live values: {exc}"

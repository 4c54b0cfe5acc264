"""Catalog reads for the monitor process (sync; the runner calls them via sync_to_async)."""

from __future__ import annotations

import zlib

from django.db.models import Count, Max

from pvs.models import PV


def shard_of(address: str, shards: int) -> int:
    """The shard an address belongs to: a stable hash (crc32), the same on every machine."""
    return zlib.crc32(address.encode()) % shards if shards > 1 else 0


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

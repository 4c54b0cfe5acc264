"""Catalog reads for live-value subscriptions by group (tags, snapshot)."""

from __future__ import annotations

import uuid

from pvs.models import PV
from snapshots.models import SnapshotValue


def _uuids(values: list[str]) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(str(value)))
        except ValueError:
            raise ValueError(f"not a UUID: {value!r}") from None
    return out


def _flatten(rows: list[tuple[str | None, ...]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for address in row:
            if address:
                seen[address] = None
    return list(seen)


def live_addresses_for_tags(*, tag_ids: list[str]) -> list[str]:
    """Setpoint and readback addresses of every PV carrying any of these tags."""
    rows = (
        PV.objects.filter(tags__in=_uuids(tag_ids))
        .distinct()
        .values_list("setpoint_address", "readback_address")
    )
    return _flatten(list(rows))


def live_addresses_for_snapshot(*, snapshot_id: str) -> list[str]:
    """Current setpoint and readback addresses of the PVs saved in a snapshot."""
    (sid,) = _uuids([snapshot_id])
    rows = SnapshotValue.objects.filter(snapshot_id=sid).values_list(
        "setpoint_address", "readback_address", "pv_name"
    )
    return _flatten(list(rows))

"""Reads of the PV catalog."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db import models
from django.db.models.functions import Coalesce, Collate

if TYPE_CHECKING:
    from pvs.models import PV  # noqa: F401 -- ruff does not see the quoted use in the base class


NATURAL_COLLATION = "natural_sort"
"""An ICU collation with numeric ordering (``und-u-kn-true``): ``DEV2`` before ``DEV10``.
Created by migration pvs 0003."""

NATURAL_NAME = Collate(
    Coalesce("setpoint_address", "readback_address", "config_address"), NATURAL_COLLATION
)
"""The PV's name (``PV.name``: the setpoint address, else the readback, else the config; the
address the API shows as ``setpointAddress``) in natural order. ``ix_pv_natural_name`` indexes
exactly this expression."""


class PVQuerySet(models.QuerySet["PV"]):
    """Chainable reads: text search and tag filters as the contract defines them."""

    def matching(self, term: str | None) -> PVQuerySet:
        """Case-insensitive substring over the five text columns (contract §2.3)."""
        if not term:
            return self
        q = models.Q()
        for column in (
            "setpoint_address",
            "readback_address",
            "config_address",
            "device",
            "description",
        ):
            q |= models.Q(**{f"{column}__icontains": term})
        return self.filter(q)

    def with_tag_filters(self, groups: Sequence[Sequence[uuid.UUID | str]]) -> PVQuerySet:
        """OR inside each group, AND across groups; empty groups are ignored."""
        qs: PVQuerySet = self
        for tag_ids in groups:
            if tag_ids:
                qs = qs.with_any_tag(tag_ids)
        return qs

    def with_any_tag(self, tag_ids: Sequence[uuid.UUID | str]) -> PVQuerySet:
        """PVs carrying at least one of these tags (each PV once); no filter when empty."""
        if not tag_ids:
            return self
        return self.filter(
            models.Exists(
                self.model.tags.through.objects.filter(
                    pv_id=models.OuterRef("pk"), tag_id__in=tag_ids
                )
            )
        )

    def with_address(self, address: str) -> PVQuerySet:
        """PVs that have ``address`` as their setpoint, readback or config address (exact)."""
        return self.filter(
            models.Q(setpoint_address=address)
            | models.Q(readback_address=address)
            | models.Q(config_address=address)
        )

    def with_devices(self, devices: Sequence[str]) -> PVQuerySet:
        """PVs whose device is one of these (exact); no filter when empty."""
        return self.filter(device__in=devices) if devices else self

    def after(self, pv_id: uuid.UUID | None) -> PVQuerySet:
        """Rows after a continuation token (ids are compared as UUIDs, as they are ordered)."""
        return self.filter(pk__gt=pv_id) if pv_id else self

    def natural_order(self) -> PVQuerySet:
        """By name in natural address order (``DEV2`` before ``DEV10``), then id: an index
        walk (``ix_pv_natural_name``), so a page of 50K PVs costs no sort."""
        return self.order_by(NATURAL_NAME, "id")

    def device_names(self) -> list[str]:
        """Sorted distinct non-empty device names."""
        return list(
            self.exclude(device__isnull=True)
            .exclude(device="")
            .order_by("device")
            .values_list("device", flat=True)
            .distinct()
        )

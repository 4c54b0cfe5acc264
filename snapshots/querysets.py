"""Chainable reads of snapshots (the tag filter of the list needs care). The streaming read of
a snapshot's 50K values is raw SQL beside the other ``snapshot_value`` I/O in storage.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from django.db import models

from tags.models import Tag


class SnapshotQuerySet(models.QuerySet):
    """Chainable reads of ``Snapshot``."""

    def titled(self, text: str | None) -> SnapshotQuerySet:
        """Title contains ``text`` (case-insensitive); no filter when empty."""
        return self.filter(title__icontains=text) if text else self

    def holding_tags(self, tag_ids: Sequence[uuid.UUID]) -> SnapshotQuerySet:
        """Snapshots holding a value whose PV currently carries any of ``tag_ids``.

        One EXISTS per snapshot, driven from the (few) tagged PVs through the index on
        ``snapshot_value.pv_id``, so it never scans a snapshot's 50K values.
        """
        if not tag_ids:
            return self
        # SnapshotValue through the relation: models.py imports this module, not the reverse.
        snapshot_value = self.model._meta.get_field("values").related_model
        assert snapshot_value is not None  # a reverse relation always has its model
        tagged_pvs = Tag.pvs.through.objects.filter(tag_id__in=list(tag_ids)).values("pv_id")
        holding = snapshot_value._default_manager.filter(
            snapshot_id=models.OuterRef("pk"), pv_id__in=tagged_pvs
        )
        return self.filter(models.Exists(holding))

    def newest_first(self) -> SnapshotQuerySet:
        return self.order_by("-created_at", "-id")

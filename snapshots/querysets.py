"""Chainable reads of snapshots (the tag filter of the list needs care). The streaming read of
a snapshot's 50K values is raw SQL beside the other ``snapshot_value`` I/O in storage.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from django.db import models
from django.db.models.expressions import RawSQL

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

    def _related(self, name: str) -> type[models.Model]:
        # Models through relations: models.py imports this module, not the reverse.
        model = self.model._meta.get_field(name).related_model
        assert model is not None and not isinstance(model, str)
        return model

    def labelled(self, labels: Sequence[str]) -> SnapshotQuerySet:
        """Carrying every one of ``labels`` (GIN index on ``labels``); no filter when empty."""
        return self.filter(labels__contains=list(labels)) if labels else self

    def searching(self, text: str | None) -> SnapshotQuerySet:
        """Title or comment contains ``text`` (case-insensitive); no filter when empty."""
        if not text:
            return self
        return self.filter(models.Q(title__icontains=text) | models.Q(description__icontains=text))

    def created_between(
        self, after: datetime | None = None, before: datetime | None = None
    ) -> SnapshotQuerySet:
        qs = self.filter(created_at__gte=after) if after is not None else self
        return qs.filter(created_at__lte=before) if before is not None else qs

    def containing_pv(self, pv: str) -> SnapshotQuerySet:
        """Holding a value of the PV with this id (index on ``pv_id``), or named or addressed
        ``pv`` (index on ``(snapshot_id, pv_name)``; a PV is recorded under its setpoint,
        else readback address)."""
        values = self._related("values")._default_manager.filter(snapshot_id=models.OuterRef("pk"))
        try:
            pv_id = uuid.UUID(pv)
        except ValueError:
            return self.filter(models.Exists(values.filter(pv_name=pv)))
        return self.filter(models.Exists(values.filter(pv_id=pv_id)))

    def metadata_between(
        self, address: str, low: float | None, high: float | None
    ) -> SnapshotQuerySet:
        """Whose stored meta-PV ``address`` (else the saved setpoint of the PV recorded under
        that name) is a number within ``[low, high]`` (either bound open when None)."""
        # The CASE guards the cast: a string or list meta value is never in a range.
        meta_num = RawSQL(
            "CASE WHEN jsonb_typeof(snapshot.metadata -> %s) = 'number'"
            " THEN (snapshot.metadata ->> %s)::float8 END",
            (address, address),
            output_field=models.FloatField(),
        )
        saved = self._related("values")._default_manager.filter(
            snapshot_id=models.OuterRef("pk"), pv_name=address, sp_num__isnull=False
        )
        in_meta = models.Q(_meta_num__isnull=False)
        if low is not None:
            saved = saved.filter(sp_num__gte=low)
            in_meta &= models.Q(_meta_num__gte=low)
        if high is not None:
            saved = saved.filter(sp_num__lte=high)
            in_meta &= models.Q(_meta_num__lte=high)
        not_meta = ~models.Q(metadata__has_key=address)
        return self.alias(_meta_num=meta_num).filter(in_meta | (not_meta & models.Exists(saved)))

    def protected(self) -> SnapshotQuerySet:
        """Labelled golden, or referenced by a restore (source or safety snapshot)."""
        return self.filter(self._protection())

    def unprotected(self) -> SnapshotQuerySet:
        return self.exclude(self._protection())

    def _protection(self) -> models.Q:
        restore = self._related("restores")._default_manager
        ref = models.OuterRef("pk")
        return (
            models.Q(labels__contains=["golden"])
            | models.Exists(restore.filter(snapshot_id=ref))
            | models.Exists(restore.filter(safety_snapshot_id=ref))
        )

    def newest_first(self) -> SnapshotQuerySet:
        return self.order_by("-created_at", "-id")

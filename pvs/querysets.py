"""Reads of the PV catalog."""

from __future__ import annotations

from django.db import models


class PVQuerySet(models.QuerySet):
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

    def with_tag_filters(self, groups: list[list[str]]) -> PVQuerySet:
        """OR inside each group, AND across groups; empty groups are ignored."""
        qs = self
        for tag_ids in groups:
            if tag_ids:
                qs = qs.filter(
                    models.Exists(
                        self.model.tags.through.objects.filter(
                            pv_id=models.OuterRef("pk"), tag_id__in=tag_ids
                        )
                    )
                )
        return qs

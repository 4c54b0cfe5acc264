"""The PV catalog (contract §3.3, §3.4)."""

from __future__ import annotations

from django.db import models

from pvs.querysets import NATURAL_NAME, PVQuerySet
from squirrel.models import BaseModel


def read_only_rule(read_only: bool, setpoint_address: str | None) -> bool:
    """Whether a PV is read-only as the API, the admin and the restore plan see it: marked so,
    or a read-back-only PV (no setpoint address: nothing to write)."""
    return bool(read_only) or not setpoint_address


#: A PV's own catalog fields, in one order: what is audited on an edit, listed by the PV DTO's
#: query, exported, and written by COPY (``pvs.services.catalog.COPY_COLUMNS``). A new field of
#: the catalog is added here once.
CATALOG_FIELDS = (
    "setpoint_address",
    "readback_address",
    "config_address",
    "device",
    "description",
    "abs_tolerance",
    "rel_tolerance",
    "read_only",
    "restore_stage",
    "completion_timeout",
)


class PV(BaseModel):
    """A process variable: up to three addresses (setpoint, readback, config) and tolerances."""

    setpoint_address = models.CharField(max_length=255, null=True, blank=True, unique=True)
    readback_address = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    config_address = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    device = models.CharField(max_length=255, null=True, blank=True, db_index=True)
    description = models.TextField(null=True, blank=True)
    abs_tolerance = models.FloatField(default=0.0)
    rel_tolerance = models.FloatField(default=0.0)
    read_only = models.BooleanField(default=False)
    # Restore order: stages run in ascending order, each written and verified before the next.
    restore_stage = models.PositiveSmallIntegerField(
        default=0, db_default=0, help_text="restores write stage 0 first, then 1, ..."
    )
    completion_timeout = models.FloatField(
        null=True,
        blank=True,
        help_text="seconds a restore waits for this PV's put to complete (empty: the default)",
    )
    tags = models.ManyToManyField("tags.Tag", related_name="pvs", blank=True, db_table="pv_tag")

    objects = PVQuerySet.as_manager()

    class Meta:
        db_table = "pv"
        ordering = ["id"]
        verbose_name = "PV"
        # The PV browser's order (``PVQuerySet.natural_order``): walked, never sorted, per page.
        indexes = [models.Index(NATURAL_NAME, models.F("id"), name="ix_pv_natural_name")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(abs_tolerance__gte=0) & models.Q(rel_tolerance__gte=0),
                name="ck_pv_tolerance_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(completion_timeout__isnull=True)
                | models.Q(completion_timeout__gt=0),
                name="ck_pv_completion_timeout_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """The address a snapshot records the PV under (contract §3.6)."""
        return self.setpoint_address or self.readback_address or self.config_address or ""

    @property
    def is_read_only(self) -> bool:
        """Never written by a restore: marked read-only, or without a setpoint address."""
        return read_only_rule(self.read_only, self.setpoint_address)

    def addresses(self) -> list[str]:
        return [a for a in (self.setpoint_address, self.readback_address, self.config_address) if a]

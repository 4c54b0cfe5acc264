"""Snapshots and their values (contract §3.5, §3.6; DESIGN.md "Storage choices").

A value row holds the setpoint side (``sp_*``) and the readback side (``rb_*``) of one PV in
typed columns, so that 50K rows are written with COPY and read back without JSON parsing.
Metadata that rarely changes (units, precision, limits, enum strings) lives once in
``ValueMeta`` and is referenced by id. See ``snapshots.storage`` for the mapping from the value
encoding (``monitor.values``) to these columns.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

from squirrel.models import BaseModel


class Snapshot(BaseModel):
    """A complete, saved record of every catalog PV's values at one moment."""

    class Kind(models.TextChoices):
        SNAPSHOT = "snapshot"
        SAFETY = "safety", "safety (taken before a restore)"

    title = models.CharField(max_length=255, db_index=True)
    description = models.TextField(null=True, blank=True)
    created_by = models.CharField(max_length=255, null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SNAPSHOT)
    pv_count = models.PositiveIntegerField(default=0)
    # Completeness: how each captured value was obtained (issue "Snapshots").
    live_count = models.PositiveIntegerField(default=0)
    stale_count = models.PositiveIntegerField(default=0)
    reread_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "snapshot"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["-created_at"], name="ix_snapshot_created")]

    def __str__(self) -> str:
        return self.title


class ValueMeta(models.Model):
    """Display metadata shared by many values; deduplicated by ``digest``."""

    digest = models.CharField(max_length=32, unique=True)
    units = models.CharField(max_length=64, null=True, blank=True)
    precision = models.SmallIntegerField(null=True, blank=True)
    upper_ctrl_limit = models.FloatField(null=True, blank=True)
    lower_ctrl_limit = models.FloatField(null=True, blank=True)
    enum_strs = ArrayField(models.TextField(), null=True, blank=True)

    class Meta:
        db_table = "value_meta"

    def __str__(self) -> str:
        return self.units or f"meta {self.pk}"


class ValueKind(models.IntegerChoices):
    """How a side's value is stored in the typed columns."""

    NONE = 0  # nothing usable (read failed, or NaN/Inf, see error)
    FLOAT = 1  # num
    INT = 2  # num, integral
    STRING = 3  # text
    ENUM = 4  # num = index, text = label
    FLOAT_ARRAY = 5  # array
    INT_ARRAY = 6  # array, integral
    STRING_ARRAY = 7  # text holds a JSON list


class ValueSource(models.IntegerChoices):
    CACHE = 1
    DIRECT = 2


class SnapshotValue(models.Model):
    """One PV's saved setpoint and readback. Survives deletion of its PV (decision 6)."""

    id = models.BigAutoField(primary_key=True)
    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="values")
    pv = models.ForeignKey(
        "pvs.PV", null=True, on_delete=models.SET_NULL, related_name="snapshot_values"
    )
    pv_name = models.CharField(max_length=255)
    setpoint_address = models.CharField(max_length=255, null=True)
    readback_address = models.CharField(max_length=255, null=True)
    # Setpoint side
    sp_kind = models.SmallIntegerField(null=True, choices=ValueKind.choices)
    sp_num = models.FloatField(null=True)
    sp_text = models.TextField(null=True)
    sp_array = ArrayField(models.FloatField(), null=True)
    sp_status = models.SmallIntegerField(null=True)
    sp_severity = models.SmallIntegerField(null=True)
    sp_ts = models.FloatField(null=True)  # IOC timestamp, UTC epoch seconds
    sp_meta = models.ForeignKey(
        ValueMeta, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    sp_source = models.SmallIntegerField(null=True, choices=ValueSource.choices)
    sp_age = models.FloatField(null=True)  # age of the cached value at capture, seconds
    sp_connected = models.BooleanField(null=True)
    sp_error = models.TextField(null=True)
    # Readback side
    rb_kind = models.SmallIntegerField(null=True, choices=ValueKind.choices)
    rb_num = models.FloatField(null=True)
    rb_text = models.TextField(null=True)
    rb_array = ArrayField(models.FloatField(), null=True)
    rb_status = models.SmallIntegerField(null=True)
    rb_severity = models.SmallIntegerField(null=True)
    rb_ts = models.FloatField(null=True)  # IOC timestamp, UTC epoch seconds
    rb_meta = models.ForeignKey(
        ValueMeta, null=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    rb_source = models.SmallIntegerField(null=True, choices=ValueSource.choices)
    rb_age = models.FloatField(null=True)  # age of the cached value at capture, seconds
    rb_connected = models.BooleanField(null=True)
    rb_error = models.TextField(null=True)

    class Meta:
        db_table = "snapshot_value"
        indexes = [models.Index(fields=["snapshot", "pv_name"], name="ix_snapshot_value_name")]

    def __str__(self) -> str:
        return self.pv_name

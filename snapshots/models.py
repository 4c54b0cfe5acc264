"""Snapshots and their values (contract §3.5, §3.6; DESIGN.md "Storage choices").

A value row holds the setpoint side (``sp_*``) and the readback side (``rb_*``) of one PV in
typed columns, so that 50K rows are written with COPY and read back without JSON parsing.
Metadata that rarely changes (units, precision, limits, enum strings) lives once in
``ValueMeta`` and is referenced by id. See ``snapshots.storage`` for the mapping from the value
encoding (``monitor.values``) to these columns.

BULK_CHILD: the tables written 50K rows at a time (snapshot values, plan items, restore
outcomes and claims) have no database constraint on their parent key. PostgreSQL checks a
deferred foreign key once per row at commit (about 3.5 us a row, 0.17 s per 50K); these rows
are written only in their parent's transaction or under a lock on the parent row taken once,
and deleting a parent deletes them (CASCADE, by Django).
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models

from snapshots.querysets import SnapshotQuerySet
from squirrel.models import BaseModel

GOLDEN = "golden"  # the reserved label: a golden snapshot is never deleted


class SnapshotSchedule(BaseModel):
    """A snapshot taken on a schedule (an interval or a crontab) by ``celery beat``, with the
    retention of its runs. The beat entry (django-celery-beat's PeriodicTask) is written by
    ``snapshots.schedules`` beside this row; this row is the source of truth."""

    name = models.CharField(max_length=200, unique=True)
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    crontab = models.CharField(
        max_length=120, null=True, blank=True, help_text="minute hour day month weekday"
    )
    title_template = models.CharField(
        max_length=255,
        default="{name} {date} {time}",
        help_text="placeholders: {name} {date} {time} {datetime} and strftime codes (%Y, %H...)",
    )
    tag_filters = models.JSONField(
        null=True, blank=True, help_text="subset: [[tag id, ...], ...] (OR inside, AND across)"
    )
    keep_last = models.PositiveIntegerField(null=True, blank=True)
    keep_days = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=255, null=True, blank=True, editable=False)
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_job = models.ForeignKey(
        "jobs.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    class Meta:
        db_table = "snapshot_schedule"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(interval_seconds__isnull=False, crontab__isnull=True)
                    | models.Q(interval_seconds__isnull=True, crontab__isnull=False)
                ),
                name="ck_snapshot_schedule_one_timing",
            ),
            models.CheckConstraint(
                condition=models.Q(interval_seconds__isnull=True)
                | models.Q(interval_seconds__gte=1),
                name="ck_snapshot_schedule_interval_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MetaPV(models.Model):
    """A context PV (beam energy, mode) read and stored with every snapshot, besides those
    named by ``SQUIRREL_SNAPSHOT_META_PVS``; a catalog PV or not."""

    address = models.CharField(max_length=255, unique=True)
    description = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "snapshot_meta_pv"
        ordering = ["address"]
        verbose_name = "meta-PV"

    def __str__(self) -> str:
        return self.address


class Snapshot(BaseModel):
    """A complete, saved record of every catalog PV's values at one moment (or of the subset
    ``selection`` names)."""

    class Kind(models.TextChoices):
        SNAPSHOT = "snapshot"
        SAFETY = "safety", "safety (taken before a restore)"
        IMPORTED = "imported", "imported (read from a file)"

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
    labels = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    schedule = models.ForeignKey(
        SnapshotSchedule,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="snapshots",
        db_index=False,  # ix_snapshot_schedule serves it
    )
    # The subset captured: {"pvIds": [...] | null, "tagFilters": [[...], ...]}; null = every PV.
    selection = models.JSONField(null=True, blank=True)
    # Meta-PV address -> its value (wire encoding) at capture.
    metadata = models.JSONField(default=dict, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        db_table = "snapshot"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="ix_snapshot_created"),
            models.Index(fields=["schedule", "-created_at"], name="ix_snapshot_schedule"),
            GinIndex(fields=["labels"], name="ix_snapshot_labels"),
        ]

    @property
    def golden(self) -> bool:
        return GOLDEN in self.labels

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
    TABLE = 8  # pvAccess NTTable: text holds its JSON (monitor.values.table_value)
    STRUCT = 9  # any other pvAccess structure: text holds its JSON; not restorable


class ValueSource(models.IntegerChoices):
    CACHE = 1
    DIRECT = 2
    IMPORTED = 3  # from a file or another Squirrel's database: never read from the machine here


class SnapshotValue(models.Model):
    """One PV's saved setpoint and readback. Survives deletion of its PV (decision 6)."""

    id = models.BigAutoField(primary_key=True)
    # Indexed by ix_snapshot_value_name (snapshot_id first): no separate FK index to maintain
    # on every COPY row. No database constraint (BULK_CHILD): rows are only written in the
    # transaction that inserts their snapshot, which nobody else can see or delete until then.
    snapshot = models.ForeignKey(
        Snapshot,
        on_delete=models.CASCADE,
        related_name="values",
        db_index=False,
        db_constraint=False,
    )
    # No database constraint: its per-row check at commit cost a third of a 50K capture. The
    # writer (storage.snapshot_values_write) holds a SHARE lock on pv while it writes and nulls
    # any id whose PV is gone before commit; deleting a PV nulls its ids (SET_NULL, by Django).
    pv = models.ForeignKey(
        "pvs.PV",
        null=True,
        on_delete=models.SET_NULL,
        related_name="snapshot_values",
        db_constraint=False,
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
        ValueMeta,
        null=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
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
        ValueMeta,
        null=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
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


# --- Restore (issue 5): plans, audit records, per-PV outcomes, claims ------------------------
# PV ids below are plain UUID columns, not foreign keys: a plan or an audit record keeps the id
# of a PV that was later deleted (decision 6), and deleting a PV or a snapshot never has to
# visit 50K plan or outcome rows.


class PlanAction(models.IntegerChoices):
    """What a restore plan does with one PV (labels are the wire names)."""

    WRITE = 1, "write"
    SKIP_EQUAL = 2, "skip-equal"
    SKIP_READ_ONLY = 3, "skip-read-only"
    SKIP_NO_VALUE = 4, "skip-no-value"
    DISCONNECTED = 5, "disconnected"
    # Outside the tags the plan's maker may restore (issue 18): never written.
    SKIP_NOT_PERMITTED = 6, "skip-not-permitted"


class Outcome(models.IntegerChoices):
    """What happened to one PV in a restore (labels are the wire names)."""

    VERIFIED = 1, "verified"
    MISMATCH = 2, "mismatch"
    WRITE_FAILED = 3, "write-failed"
    TIMED_OUT = 4, "timed-out"
    DISCONNECTED = 5, "disconnected"
    INTERRUPTED = 6, "interrupted"  # written, but the worker died before it was verified
    NOT_ATTEMPTED = 7, "not-attempted"  # the restore stopped before reaching it
    SKIPPED_EQUAL = 8, "skipped-equal"
    SKIPPED_READ_ONLY = 9, "skipped-read-only"
    SKIPPED_NO_VALUE = 10, "skipped-no-value"
    WRITE_UNKNOWN = 11, "write-unknown"  # sent, never answered (IOC died): may have been applied
    # The setpoint was written and verified; its readback differs (beyond the PV's tolerance
    # after the settle time, or, with no tolerance, at once). A success with a warning.
    READBACK_DIFFERS = 12, "readback-differs"
    SKIPPED_NOT_PERMITTED = 13, "skipped-not-permitted"  # outside the restorer's tags


class RestorePlan(BaseModel):
    """A dry run of a restore against the live values at ``created_at``; executable once."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="restore_plans")
    created_by = models.CharField(max_length=255, null=True, blank=True)
    pv_ids = ArrayField(models.UUIDField(), null=True, blank=True)  # selection, None = all
    tag_filters = models.JSONField(null=True, blank=True)  # selection: [[tag id, ...], ...]
    total = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)  # action label -> count
    elapsed = models.FloatField(default=0.0)  # seconds it took to compute
    # Approval (issue 18): a plan made without the restore scope waits for one who has it.
    needs_approval = models.BooleanField(default=False)
    approved_by = models.CharField(max_length=255, null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    # Tag ids the maker may restore (null: all); items outside are skip-not-permitted.
    permitted_tag_ids = ArrayField(models.UUIDField(), null=True, blank=True)
    stages = models.JSONField(default=list, blank=True)  # [{stage, total, write}], ascending

    class Meta:
        db_table = "restore_plan"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"plan {self.pk} of {self.snapshot_id}"


class RestorePlanItem(models.Model):
    """One PV of a plan: where to write, the saved value's row, the live value and the action."""

    id = models.BigAutoField(primary_key=True)
    # No database constraint (BULK_CHILD): items are written in the plan's own transaction.
    # No index of its own: ix_restore_plan_item_action (plan, action) serves plan lookups.
    plan = models.ForeignKey(
        RestorePlan,
        on_delete=models.CASCADE,
        related_name="items",
        db_constraint=False,
        db_index=False,
    )
    value_id = models.BigIntegerField(null=True)  # SnapshotValue row holding the saved value
    pv_id = models.UUIDField(null=True)
    pv_name = models.CharField(max_length=255)
    setpoint_address = models.CharField(max_length=255, null=True)
    readback_address = models.CharField(max_length=255, null=True)
    action = models.SmallIntegerField(choices=PlanAction.choices)
    abs_tolerance = models.FloatField(default=0.0)
    rel_tolerance = models.FloatField(default=0.0)
    saved = models.TextField(null=True)  # JSON of the saved setpoint (wire encoding)
    live = models.TextField(null=True)  # JSON of the live setpoint at planning
    delta = models.FloatField(null=True)  # |live - saved| for numeric scalars
    note = models.TextField(null=True)
    stage = models.PositiveSmallIntegerField(default=0, db_default=0)  # the PV's restore stage
    completion_timeout = models.FloatField(null=True)  # seconds; null: the default

    class Meta:
        db_table = "restore_plan_item"
        indexes = [models.Index(fields=["plan", "action"], name="ix_restore_plan_item_action")]

    def __str__(self) -> str:
        return f"{self.pv_name}: {self.get_action_display()}"


class Restore(BaseModel):
    """The audit record of one restore (or revert): who, when, which plan, and how it went."""

    class Kind(models.TextChoices):
        RESTORE = "restore"
        REVERT = "revert"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.RESTORE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="restores"
    )
    snapshot_title = models.CharField(max_length=255, blank=True, default="")
    plan = models.ForeignKey(
        RestorePlan, null=True, blank=True, on_delete=models.SET_NULL, related_name="restores"
    )
    safety_snapshot = models.ForeignKey(
        Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reverts = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reverted_by"
    )
    created_by = models.CharField(max_length=255, null=True, blank=True)
    pv_ids = ArrayField(models.UUIDField(), null=True, blank=True)  # requested selection
    tag_filters = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    request_digest = models.CharField(max_length=64, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempted = models.PositiveIntegerField(default=0)  # PVs whose write was started
    # Plan items are written in id order: every write item up to this id was (being) written.
    attempted_through = models.BigIntegerField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)  # PVs to write (write + disconnected)
    success_count = models.PositiveIntegerField(default=0)
    failure_count = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)  # outcome label -> count
    timings = models.JSONField(default=dict, blank=True)  # phase -> seconds
    error = models.TextField(null=True, blank=True)
    stop_on_failure = models.BooleanField(default=False)  # later stages not-attempted
    # Tag ids the requester may restore (null: all): its plan marks the rest not permitted.
    permitted_tag_ids = ArrayField(models.UUIDField(), null=True, blank=True)
    stages = models.JSONField(default=list, blank=True)  # per stage: counts, start, end

    class Meta:
        db_table = "restore"
        ordering = ["-created_at"]
        constraints = [
            # A plan is executed at most once.
            models.UniqueConstraint(fields=["plan"], name="uq_restore_plan"),
        ]
        indexes = [
            models.Index(fields=["-created_at"], name="ix_restore_created"),
            models.Index(fields=["status"], name="ix_restore_status"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.snapshot_title or self.snapshot_id} ({self.status})"


class RestoreOutcome(models.Model):
    """What one restore did to one PV; written with COPY, a chunk at a time."""

    id = models.BigAutoField(primary_key=True)
    # No database constraint (BULK_CHILD): the writer (restore.records.outcomes_write) holds the
    # restore row FOR KEY SHARE -- one lock per chunk instead of one check per row.
    # No index of its own: ix_restore_outcome (restore, outcome) serves restore lookups.
    restore = models.ForeignKey(
        Restore,
        on_delete=models.CASCADE,
        related_name="outcomes",
        db_constraint=False,
        db_index=False,
    )
    item_id = models.BigIntegerField(null=True)  # RestorePlanItem (kept after plan deletion)
    pv_id = models.UUIDField(null=True)
    pv_name = models.CharField(max_length=255)
    outcome = models.SmallIntegerField(choices=Outcome.choices)
    written = models.TextField(null=True)  # JSON of the value written
    setpoint_read = models.TextField(null=True)  # JSON of the setpoint read back
    readback_read = models.TextField(null=True)  # JSON of the readback read back
    error = models.TextField(null=True)
    stage = models.PositiveSmallIntegerField(default=0, db_default=0)

    class Meta:
        db_table = "restore_outcome"
        indexes = [models.Index(fields=["restore", "outcome"], name="ix_restore_outcome")]

    def __str__(self) -> str:
        return f"{self.pv_name}: {self.get_outcome_display()}"


class RestoreClaim(models.Model):
    """A PV claimed by a running restore: at most one restore writes a PV at a time."""

    pv_id = models.UUIDField(primary_key=True)
    # No database constraint (BULK_CHILD): claims are written in their restore's transaction.
    restore = models.ForeignKey(
        Restore, on_delete=models.CASCADE, related_name="claims", db_constraint=False
    )

    class Meta:
        db_table = "restore_claim"

    def __str__(self) -> str:
        return f"{self.pv_id} -> {self.restore_id}"

"""Job records of asynchronous work (contract §3.7, §5)."""

from __future__ import annotations

from django.db import models

from squirrel.models import BaseModel


class Job(BaseModel):
    """One asynchronous operation with its progress, readable the moment it is created."""

    class Type(models.TextChoices):
        SNAPSHOT_CREATE = "snapshot_create"
        SNAPSHOT_RESTORE = "snapshot_restore"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    type = models.CharField(max_length=50, choices=Type.choices, db_index=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=255, null=True, blank=True)
    result_id = models.CharField(max_length=36, null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    job_data = models.JSONField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.CharField(max_length=255, null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Kept fresh by the worker while it runs the job (jobs.heartbeat); null while nobody holds
    # it (pending, or waiting in the queue for a retry).
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "job"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(progress__lte=100), name="ck_job_progress_at_most_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.status} {self.progress}%"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.FAILED)

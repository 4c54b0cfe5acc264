"""Response shape of a job (contract §2.2 JobDTO, §5). Never writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework import serializers

from jobs.models import Job


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_dto(job: Job) -> dict[str, Any]:
    """JobDTO, exactly the contract's keys."""
    return {
        "id": str(job.pk),
        "type": job.type,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "resultId": job.result_id,
        "error": job.error,
        "jobData": job.job_data,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "completedAt": _iso(job.completed_at),
    }


class JobOutSerializer(serializers.Serializer):
    """JobDTO, for the OpenAPI schema only."""

    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=Job.Type.choices)
    status = serializers.ChoiceField(choices=Job.Status.choices)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    message = serializers.CharField(allow_null=True)
    resultId = serializers.CharField(allow_null=True, help_text="the snapshot's id")
    error = serializers.CharField(allow_null=True)
    jobData = serializers.JSONField(allow_null=True)
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    completedAt = serializers.DateTimeField(allow_null=True)

"""Request and response shapes of /v1/snapshot-schedules (issue 17). Never writes."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from snapshots.models import SnapshotSchedule
from snapshots.schedules import ScheduleData, schedule_wire


def schedule_dto(schedule: SnapshotSchedule) -> dict[str, Any]:
    """SnapshotScheduleDTO."""
    return {
        "id": str(schedule.pk),
        **schedule_wire(schedule),
        "createdBy": schedule.created_by,
        "createdDate": schedule.created_at.isoformat(),
        "lastModifiedDate": schedule.updated_at.isoformat(),
        "lastRunAt": schedule.last_run_at.isoformat() if schedule.last_run_at else None,
        "lastJobId": str(schedule.last_job_id) if schedule.last_job_id else None,
    }


_KEYS = {
    "name": "name",
    "intervalSeconds": "interval_seconds",
    "crontab": "crontab",
    "titleTemplate": "title_template",
    "tagFilters": "tag_filters",
    "keepLast": "keep_last",
    "keepDays": "keep_days",
    "enabled": "enabled",
}


class ScheduleWriteSerializer(serializers.Serializer):
    """POST and PUT body. PUT: absent keys stay as they are (null clears a retention rule);
    giving ``crontab`` clears ``intervalSeconds`` and the reverse. The rules between fields
    are ``schedules.schedule_clean``'s."""

    name = serializers.CharField(max_length=200)
    intervalSeconds = serializers.IntegerField(
        min_value=1, max_value=10_000_000, allow_null=True, required=False
    )
    crontab = serializers.CharField(
        max_length=120, allow_null=True, required=False, help_text="minute hour dom month dow"
    )
    titleTemplate = serializers.CharField(
        max_length=255, required=False, help_text="{name} {date} {time} {datetime}, %Y..."
    )
    tagFilters = serializers.JSONField(
        allow_null=True, required=False, help_text="[[tag id, ...], ...]: a subset"
    )
    keepLast = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    keepDays = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    enabled = serializers.BooleanField(required=False)

    def to_data(self, base: ScheduleData | None = None) -> ScheduleData:
        """The schedule's fields: ``base`` (PUT) with the given keys replaced."""
        given = self.validated_data
        data = base or ScheduleData(name="")
        for key, attr in _KEYS.items():
            if key in given:
                setattr(data, attr, given[key])
        if given.get("crontab") and "intervalSeconds" not in given:
            data.interval_seconds = None
        if given.get("intervalSeconds") is not None and "crontab" not in given:
            data.crontab = None
        return data


class ScheduleOutSerializer(serializers.Serializer):
    """SnapshotScheduleDTO, for the schema and the shape test."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    intervalSeconds = serializers.IntegerField(allow_null=True)
    crontab = serializers.CharField(allow_null=True)
    titleTemplate = serializers.CharField()
    tagFilters = serializers.ListField(
        child=serializers.ListField(child=serializers.UUIDField()), allow_null=True
    )
    keepLast = serializers.IntegerField(allow_null=True)
    keepDays = serializers.IntegerField(allow_null=True)
    enabled = serializers.BooleanField()
    createdBy = serializers.CharField(allow_null=True)
    createdDate = serializers.DateTimeField()
    lastModifiedDate = serializers.DateTimeField()
    lastRunAt = serializers.DateTimeField(allow_null=True)
    lastJobId = serializers.UUIDField(allow_null=True)

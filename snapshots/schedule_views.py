"""/v1/snapshot-schedules (issue 17): list, create, read, edit, delete, retention preview.
Thin: parse, call one service in ``snapshots.schedules``, shape the answer."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from snapshots import schedules
from snapshots.models import SnapshotSchedule
from snapshots.schedule_serializers import (
    ScheduleOutSerializer,
    ScheduleWriteSerializer,
    schedule_dto,
)
from snapshots.serializers import SnapshotSummaryOutSerializer, snapshot_summary_dto
from squirrel import audit
from squirrel.auth import created_by
from squirrel.http import body_object, valid


class ScheduleListView(APIView):
    """GET: every schedule, by name. POST: create one."""

    @extend_schema(responses=ScheduleOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([schedule_dto(s) for s in SnapshotSchedule.objects.order_by("name")])

    @extend_schema(request=ScheduleWriteSerializer, responses=ScheduleOutSerializer)
    def post(self, request: Request) -> Response:
        body = valid(ScheduleWriteSerializer(data=body_object(request.data)))
        schedule = schedules.schedule_create(
            data=body.to_data(), actor=audit.actor_of(request), created_by=created_by(request)
        )
        return Response(schedule_dto(schedule))


class ScheduleDetailView(APIView):
    """GET, PUT (absent keys unchanged), DELETE one schedule (its snapshots stay)."""

    @extend_schema(responses=ScheduleOutSerializer)
    def get(self, request: Request, schedule_id: str) -> Response:
        return Response(schedule_dto(schedules.schedule_get(schedule_id=schedule_id)))

    @extend_schema(request=ScheduleWriteSerializer, responses=ScheduleOutSerializer)
    def put(self, request: Request, schedule_id: str) -> Response:
        current = schedules.schedule_get(schedule_id=schedule_id)
        body = valid(ScheduleWriteSerializer(data=body_object(request.data), partial=True))
        schedule = schedules.schedule_update(
            schedule_id=schedule_id,
            data=body.to_data(schedules.ScheduleData.of(current)),
            actor=audit.actor_of(request),
        )
        return Response(schedule_dto(schedule))

    @extend_schema(responses={200: OpenApiTypes.BOOL})
    def delete(self, request: Request, schedule_id: str) -> Response:
        schedules.schedule_delete(schedule_id=schedule_id, actor=audit.actor_of(request))
        return Response(True)


class RetentionPreviewView(APIView):
    """GET: the snapshots the schedule's next retention sweep would delete, newest first."""

    @extend_schema(responses=SnapshotSummaryOutSerializer(many=True))
    def get(self, request: Request, schedule_id: str) -> Response:
        doomed = schedules.retention_preview(schedule_id=schedule_id)
        return Response([snapshot_summary_dto(s) for s in doomed])

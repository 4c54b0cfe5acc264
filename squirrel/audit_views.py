"""GET /v1/audit: the audit trail, newest first, paged, with filters (issue 18). Read scope.

Thin: the query is validated by a serializer, the rows read with ``values_list`` and shaped by
``audit_event_dto`` (the one builder of AuditEventDTO).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from squirrel.api import MAX_QUERY_INT
from squirrel.http import query_data, valid
from squirrel.models import AuditEvent

MAX_LIMIT = 1000


class AuditQuerySerializer(serializers.Serializer):
    """Filters of GET /v1/audit; every one optional, all of them ANDed."""

    actor = serializers.CharField(
        required=False, max_length=255, help_text="exact: api-key:<name>, user:<name>, ..."
    )
    kind = serializers.CharField(
        required=False,
        max_length=64,
        help_text="exact (restore.request), or a prefix ending in a dot (restore.)",
    )
    objectType = serializers.CharField(required=False, max_length=64, help_text="pv, snapshot, ...")
    objectId = serializers.CharField(required=False, max_length=64)
    since = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive")
    until = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive")
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=100)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_QUERY_INT, default=0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": "must be later than since"})
        return attrs


class AuditEventOutSerializer(serializers.Serializer):
    """AuditEventDTO, for the OpenAPI schema (``audit_event_dto`` builds it)."""

    id = serializers.IntegerField()
    at = serializers.DateTimeField()
    actor = serializers.CharField()
    kind = serializers.CharField()
    objectType = serializers.CharField(allow_blank=True)
    objectId = serializers.CharField(allow_blank=True)
    summary = serializers.CharField(allow_blank=True)
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    detail = serializers.JSONField()


class AuditPageOutSerializer(serializers.Serializer):
    results = AuditEventOutSerializer(many=True)
    totalCount = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


AUDIT_COLUMNS = (
    "id",
    "at",
    "actor",
    "kind",
    "object_type",
    "object_id",
    "summary",
    "before",
    "after",
    "detail",
)


def audit_event_dto(row: tuple[Any, ...]) -> dict[str, Any]:
    """AuditEventDTO of one ``values_list(*AUDIT_COLUMNS)`` row."""
    pk, at, actor, kind, object_type, object_id, summary, before, after, detail = row
    when: datetime = at
    return {
        "id": pk,
        "at": when.isoformat(),
        "actor": actor,
        "kind": kind,
        "objectType": object_type,
        "objectId": object_id,
        "summary": summary,
        "before": before,
        "after": after,
        "detail": detail,
    }


def _filtered(query: dict[str, Any]) -> Any:
    qs = AuditEvent.objects.all()
    if "actor" in query:
        qs = qs.filter(actor=query["actor"])
    if "kind" in query:
        kind = query["kind"]
        qs = qs.filter(kind__startswith=kind) if kind.endswith(".") else qs.filter(kind=kind)
    if "objectType" in query:
        qs = qs.filter(object_type=query["objectType"])
    if "objectId" in query:
        qs = qs.filter(object_id=query["objectId"])
    if "since" in query:
        qs = qs.filter(at__gte=query["since"])
    if "until" in query:
        qs = qs.filter(at__lt=query["until"])
    return qs


class AuditListView(APIView):
    """GET: audit events newest first (``limit`` ≤ 1000, ``offset``), filtered by actor, kind,
    object and date range."""

    @extend_schema(parameters=[AuditQuerySerializer], responses=AuditPageOutSerializer)
    def get(self, request: Request) -> Response:
        names = tuple(AuditQuerySerializer().fields)
        data = query_data(request.query_params, *names, blank_is_absent=True)
        query = valid(AuditQuerySerializer(data=data), "query").validated_data
        qs = _filtered(query)
        limit, offset = query["limit"], query["offset"]
        rows = qs.order_by("-id").values_list(*AUDIT_COLUMNS)[offset : offset + limit]
        return Response(
            {
                "results": [audit_event_dto(r) for r in rows],
                "totalCount": qs.count(),
                "limit": limit,
                "offset": offset,
            }
        )

"""The snapshot read API (contract §2.4): list, detail (streamed), edit, delete.

Thin: parse the query or body, call one service or queryset, shape the answer with
``snapshots.serializers``. POST /v1/snapshots (capture) is h5's ``SnapshotCreateView``; the
list route dispatches POST to it (one URL, one route).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework.exceptions import ErrorDetail
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from snapshots import services
from snapshots.capture_views import SnapshotCreateView
from snapshots.filters import SnapshotFilterSet
from snapshots.models import Snapshot
from snapshots.serializers import (
    JobCreatedOutSerializer,
    SnapshotCreateSerializer,
    SnapshotDetailQuerySerializer,
    SnapshotListQuerySerializer,
    SnapshotOutSerializer,
    SnapshotSummaryOutSerializer,
    SnapshotUpdateSerializer,
    query_data,
    snapshot_summary_dto,
    value_row_json,
)
from snapshots.storage import snapshot_value_rows
from squirrel.api import stream_json
from squirrel.exceptions import Invalid


def _valid(serializer: Any, where: str = "body") -> dict[str, Any]:
    """validated_data, or Invalid (422) with the field errors located in ``where``."""
    if serializer.is_valid():
        return serializer.validated_data
    errors = [
        {"loc": [where, field], "msg": str(msg), "type": getattr(msg, "code", "invalid")}
        for field, msgs in serializer.errors.items()
        for msg in (msgs if isinstance(msgs, list) else [msgs])
    ]
    message = "; ".join(f"{e['loc'][1]}: {e['msg']}" for e in errors)
    raise Invalid(f"Validation error: {message}", errors)


class _FilterErrors:
    """A FilterSet's errors in the shape ``_valid`` reads."""

    def __init__(self, filterset: SnapshotFilterSet) -> None:
        self.filterset = filterset

    def is_valid(self) -> bool:
        return self.filterset.is_valid()

    @property
    def errors(self) -> dict[str, list[Any]]:
        """Each field's messages, with their codes (``ErrorDetail``, as a serializer's)."""
        return {
            field: [ErrorDetail(e["message"], e["code"] or "invalid") for e in errors]
            for field, errors in self.filterset.errors.get_json_data().items()
        }

    @property
    def validated_data(self) -> dict[str, Any]:
        return {}


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise Invalid(
            "Validation error: body: expected an object",
            [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}],
        )
    return request.data


class SnapshotListView(APIView):
    """GET: summaries, newest first (filters ``title``, ``tags``, ``kind``; ``limit``/
    ``offset``). POST: capture a snapshot (h5's view)."""

    @extend_schema(
        parameters=[
            SnapshotListQuerySerializer,
            OpenApiParameter("title", str, description="title contains (case-insensitive)"),
            OpenApiParameter(
                "tags", OpenApiTypes.UUID, many=True, description="PV currently tagged with any"
            ),
            OpenApiParameter("kind", str, enum=Snapshot.Kind.values),
        ],
        responses=SnapshotSummaryOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        page = _valid(
            SnapshotListQuerySerializer(data=query_data(request.query_params, "limit", "offset")),
            "query",
        )
        filterset = SnapshotFilterSet(request.query_params, queryset=Snapshot.objects.all())
        _valid(_FilterErrors(filterset), "query")
        snapshots = filterset.qs.newest_first()[page["offset"] : page["offset"] + page["limit"]]
        return Response([snapshot_summary_dto(s) for s in snapshots])

    @extend_schema(
        operation_id="v1_snapshots_create",
        request=SnapshotCreateSerializer,
        parameters=[
            OpenApiParameter("async", bool, description="default true: queue a capture job"),
            OpenApiParameter("use_cache", bool, description="default true: cached live values"),
        ],
        responses=PolymorphicProxySerializer(
            component_name="SnapshotCreateResult",
            serializers=[JobCreatedOutSerializer, SnapshotSummaryOutSerializer],
            resource_type_field_name=None,
        ),
        description="Capture a snapshot: JobCreatedDTO, or SnapshotSummaryDTO with async=false.",
    )
    def post(self, request: Request) -> Response:
        return SnapshotCreateView().post(request)


def _rows_json(snapshot_id: Any, limit: int | None, offset: int) -> Iterator[str]:
    return map(
        value_row_json, snapshot_value_rows(snapshot_id=snapshot_id, limit=limit, offset=offset)
    )


class SnapshotDetailView(APIView):
    """GET: SnapshotDTO, its ``pvValues`` streamed in pv_name order. PUT: edit. DELETE."""

    @extend_schema(parameters=[SnapshotDetailQuerySerializer], responses=SnapshotOutSerializer)
    def get(self, request: Request, snapshot_id: str) -> StreamingHttpResponse:
        query = _valid(
            SnapshotDetailQuerySerializer(data=query_data(request.query_params, "limit", "offset")),
            "query",
        )
        snapshot = services.snapshot_get(snapshot_id=snapshot_id)
        rows = _rows_json(snapshot.pk, query.get("limit"), query["offset"])
        return stream_json(snapshot_summary_dto(snapshot), "pvValues", rows, view=self)

    @extend_schema(request=SnapshotUpdateSerializer, responses=SnapshotSummaryOutSerializer)
    def put(self, request: Request, snapshot_id: str) -> Response:
        serializer = SnapshotUpdateSerializer(data=_body(request))
        _valid(serializer)
        snapshot = services.snapshot_update(snapshot_id=snapshot_id, **serializer.to_service())
        return Response(snapshot_summary_dto(snapshot))

    @extend_schema(
        parameters=[OpenApiParameter("deleteData", bool, description="ignored")],
        responses={200: OpenApiTypes.BOOL},  # the contract answers 200 true, never 204
    )
    def delete(self, request: Request, snapshot_id: str) -> Response:
        services.snapshot_delete(snapshot_id=snapshot_id)  # ``deleteData`` is ignored
        return Response(True)

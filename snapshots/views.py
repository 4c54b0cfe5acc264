"""The snapshot read API (contract §2.4): list, detail (streamed), edit, delete.

Thin: parse the query or body, call one service or queryset, shape the answer with
``snapshots.serializers``. POST /v1/snapshots (capture) is h5's ``SnapshotCreateView``; the
list route dispatches POST to it (one URL, one route).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pvs.services import pv_get
from snapshots import live_verdicts, services
from snapshots.capture_views import SnapshotCreateView
from snapshots.filters import SnapshotFilterSet
from snapshots.live_serializers import (
    LiveRowsOutSerializer,
    LiveRowsQuerySerializer,
    live_rows_dto,
)
from snapshots.models import Snapshot
from snapshots.serializers import (
    JobCreatedOutSerializer,
    PVHistoryItemOutSerializer,
    SnapshotCreateSerializer,
    SnapshotDetailQuerySerializer,
    SnapshotLabelsSerializer,
    SnapshotListQuerySerializer,
    SnapshotOutSerializer,
    SnapshotSummaryMetaOutSerializer,
    SnapshotSummaryOutSerializer,
    SnapshotUpdateSerializer,
    pv_history_dto,
    snapshot_summary_dto,
    snapshot_summary_meta_dto,
    value_row_json,
)
from snapshots.storage import pv_history_rows, snapshot_value_rows
from squirrel import audit
from squirrel.api import encode, envelope_enabled, stream_json, wrap_success
from squirrel.exceptions import Unavailable
from squirrel.http import (
    body_object,
    invalid,
    query_bool,
    query_data,
    valid,
    valid_filterset,
    validated,
)


def _page_query(request: Request) -> dict[str, Any]:
    """``limit``/``offset`` as serializer input (``limit=`` means absent)."""
    return query_data(request.query_params, "limit", "offset", blank_is_absent=True)


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
            OpenApiParameter("createdBy", str),
            OpenApiParameter("createdAfter", OpenApiTypes.DATETIME),
            OpenApiParameter("createdBefore", OpenApiTypes.DATETIME),
            OpenApiParameter("labels", str, many=True, description="carrying all of them"),
            OpenApiParameter("search", str, description="title or comment contains"),
            OpenApiParameter("containsPv", str, description="a PV id or name saved in it"),
            OpenApiParameter("scheduleId", OpenApiTypes.UUID),
            OpenApiParameter(
                "metadataPVs", str, many=True, description="add these addresses' saved values"
            ),
            OpenApiParameter(
                "metadataFilter", str, description="ADDRESS:min:max (a bound may be empty)"
            ),
        ],
        responses=SnapshotSummaryMetaOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        page = validated(
            SnapshotListQuerySerializer(data=_page_query(request)),
            "query",
        )
        filterset = valid_filterset(
            SnapshotFilterSet(request.query_params, queryset=Snapshot.objects.all())
        )
        snapshots = list(
            filterset.qs.newest_first()[page["offset"] : page["offset"] + page["limit"]]
        )
        addresses = list(
            dict.fromkeys(
                a.strip()
                for raw in request.query_params.getlist("metadataPVs")
                for a in raw.split(",")
                if a.strip()
            )
        )
        if not addresses:
            return Response([snapshot_summary_dto(s) for s in snapshots])
        metadata = services.snapshots_metadata(snapshots=snapshots, addresses=addresses)
        return Response([snapshot_summary_meta_dto(s, metadata[s.pk]) for s in snapshots])

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
        query = validated(SnapshotDetailQuerySerializer(data=_page_query(request)), "query")
        snapshot = services.snapshot_get(snapshot_id=snapshot_id)
        rows = _rows_json(snapshot.pk, query.get("limit"), query["offset"])
        return stream_json(snapshot_summary_dto(snapshot), "pvValues", rows, view=self)

    @extend_schema(request=SnapshotUpdateSerializer, responses=SnapshotSummaryOutSerializer)
    def put(self, request: Request, snapshot_id: str) -> Response:
        serializer = valid(SnapshotUpdateSerializer(data=body_object(request.data)))
        snapshot = services.snapshot_update(snapshot_id=snapshot_id, **serializer.to_service())
        return Response(snapshot_summary_dto(snapshot))

    @extend_schema(
        parameters=[OpenApiParameter("deleteData", bool, description="ignored")],
        responses={200: OpenApiTypes.BOOL},  # the contract answers 200 true, never 204
    )
    def delete(self, request: Request, snapshot_id: str) -> Response:
        # ``deleteData`` is ignored; a protected snapshot answers 409 with the reason.
        services.snapshot_delete(snapshot_id=snapshot_id, actor=audit.actor_of(request))
        return Response(True)


class SnapshotLiveRowsView(APIView):
    """GET: one page of a snapshot's rows with saved and live values shown alike, each row's
    verdict and the counts of the whole snapshot (our live page's route, not the contract's).
    The verdicts are this process's shared state (``snapshots.live_verdicts``); an unchanged
    page answers 304 to its ETag."""

    @extend_schema(
        parameters=[
            LiveRowsQuerySerializer,
            OpenApiParameter("onlyOut", bool, description="only rows out of tolerance"),
        ],
        responses=LiveRowsOutSerializer,
    )
    def get(self, request: Request, snapshot_id: str) -> HttpResponse:
        params = request.query_params
        data = query_data(params, "offset", "limit", "q", lists=("tags",), blank_is_absent=True)
        query = validated(LiveRowsQuerySerializer(data=data), "query")
        only_out = query_bool(params, "onlyOut", False)
        page_query = live_verdicts.PageQuery(
            offset=query["offset"],
            limit=query["limit"],
            q=query["q"],
            only_out=only_out,
            tags=tuple(sorted(str(t) for t in query["tags"])),
        )
        try:
            state = live_verdicts.state_checked(snapshot_id=snapshot_id)
            if state is None:
                snapshot = services.snapshot_get(snapshot_id=snapshot_id)
                state = live_verdicts.verdict_state(
                    snapshot_id=str(snapshot.pk), title=snapshot.title
                )
            tagged = live_verdicts.tagged_pv_ids(state, page_query.tags)
            page = state.page(page_query, tagged)
        except redis.RedisError as exc:
            raise Unavailable(f"Live values unavailable: {exc}") from exc
        headers = {"ETag": page.etag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == page.etag:
            return HttpResponse(status=304, headers=headers)
        body = live_rows_dto(
            state.snapshot_id, state.title, page, offset=page_query.offset, limit=page_query.limit
        )
        # Polled by every open page: encoded once with orjson (squirrel.api).
        content = encode(wrap_success(body) if envelope_enabled(self) else body)
        return HttpResponse(content, content_type="application/json", headers=headers)


class SnapshotLabelsView(APIView):
    """PUT /v1/snapshots/{id}/labels ``{"labels": [...]}``: replace the labels."""

    @extend_schema(request=SnapshotLabelsSerializer, responses=SnapshotSummaryOutSerializer)
    def put(self, request: Request, snapshot_id: str) -> Response:
        data = body_object(request.data)
        if "labels" not in data:
            raise invalid(["body", "labels"], "Field required", "missing")
        snapshot = services.snapshot_labels_set(
            snapshot_id=snapshot_id, labels=data["labels"], actor=audit.actor_of(request)
        )
        return Response(snapshot_summary_dto(snapshot))


class PVHistoryView(APIView):
    """GET /v1/pvs/{id}/history: the PV's saved values across snapshots, newest first
    (``limit`` 1..1000, default 100; ``offset``)."""

    @extend_schema(
        parameters=[SnapshotListQuerySerializer], responses=PVHistoryItemOutSerializer(many=True)
    )
    def get(self, request: Request, pv_id: str) -> Response:
        page = validated(SnapshotListQuerySerializer(data=_page_query(request)), "query")
        pv = pv_get(pv_id=pv_id)
        rows = pv_history_rows(pv_id=pv.pk, limit=page["limit"], offset=page["offset"])
        return Response([pv_history_dto(row) for row in rows])

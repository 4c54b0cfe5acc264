"""Views of snapshot capture, comparison and export (contract §2.4, §6.1; issue 4).

Thin: parse the query and body, call one service, shape the answer. ``SnapshotCreateView``
holds the POST of ``/v1/snapshots``; the list route dispatches POST to it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.http import QueryDict, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from snapshots import capture, compare, export, importer, services
from snapshots.codec import QUALITIES
from snapshots.restore.selection import selection_parse
from snapshots.serializers import (
    ComparisonOutSerializer,
    SnapshotExportOutSerializer,
    SnapshotSummaryOutSerializer,
    snapshot_summary_dto,
)
from squirrel import audit
from squirrel.auth import created_by
from squirrel.http import body_object, invalid, query_bool


def _description(data: dict[str, Any]) -> str | None:
    for key in ("comment", "description"):
        value = data.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise invalid(
                    ["body", key],
                    "Input should be a string",
                    "str",
                    message=f"Validation error: {key}: not a string",
                )
            return services.text_without_nul(key, value)
    return None


class SnapshotCreateView(APIView):
    """POST /v1/snapshots: queue a capture job (``async=true``) or capture now."""

    def post(self, request: Request) -> Response:
        run_async = query_bool(request.query_params, "async", True)
        use_cache = query_bool(request.query_params, "use_cache", True)
        data = body_object(request.data)
        description = _description(data)
        title = data.get("title")  # checked by the service (snapshot_title_clean)
        # A subset: pvIds and/or tagFilters (OR inside a group, AND across), as a restore's.
        selection = selection_parse(pv_ids=data.get("pvIds"), tag_filters=data.get("tagFilters"))
        subset = selection.pv_ids is not None or bool(selection.tag_filters)
        if not run_async:
            snapshot = capture.snapshot_capture(
                title=title,
                description=description,
                use_cache=use_cache,
                created_by=created_by(request),
                selection=selection if subset else None,
            )
            return Response(snapshot_summary_dto(snapshot))
        job = services.snapshot_create_enqueue(
            title=title,
            description=description,
            use_cache=use_cache,
            created_by=created_by(request),
            selection=selection.to_json() if subset else None,
        )
        assert job.job_data is not None  # snapshot_create_enqueue creates the job with its data
        message = services.snapshot_create_queued_message(
            title=job.job_data["title"], use_cache=use_cache
        )
        return Response({"jobId": str(job.pk), "message": message})


COMPARE_PARAMETERS = [
    OpenApiParameter("onlyDifferent", bool, description="default true"),
    OpenApiParameter(
        "tags", OpenApiTypes.UUID, many=True, description="PVs currently tagged with any"
    ),
    OpenApiParameter(
        "quality", str, many=True, enum=QUALITIES, description="either side's quality"
    ),
]


def compare_filters(request: Request) -> compare.CompareFilters:
    """onlyDifferent (default true), repeated ``tags``, repeated ``quality``."""
    qualities = tuple(request.query_params.getlist("quality"))
    bad = [q for q in qualities if q not in QUALITIES]
    if bad:
        raise invalid(
            ["query", "quality"],
            f"Unknown quality {bad[0]!r}",
            "enum",
            message=f"Validation error: quality: must be one of {', '.join(QUALITIES)}",
        )
    return compare.CompareFilters(
        only_different=query_bool(request.query_params, "onlyDifferent", True),
        tag_ids=tuple(_tag_id(t) for t in request.query_params.getlist("tags") if t.strip()),
        qualities=qualities,
    )


def _tag_id(raw: str) -> str:
    """A ``tags`` value as a canonical tag id, else 422 (blank values are no filter)."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError:
        raise invalid(
            ["query", "tags"],
            "Input should be a valid UUID",
            "uuid",
            message=f"Validation error: tags: {raw!r} is not a valid UUID",
        ) from None


class SnapshotCompareView(APIView):
    """GET /v1/snapshots/{a}/compare/{b} (contract §6.1 + per-side detail and summary)."""

    @extend_schema(parameters=COMPARE_PARAMETERS, responses=ComparisonOutSerializer)
    def get(self, request: Request, snapshot_id: str, other_id: str) -> Response:
        filters = compare_filters(request)
        result = compare.snapshot_compare(
            snapshot1_id=snapshot_id, snapshot2_id=other_id, filters=filters
        )
        return Response(result.to_wire())


class SnapshotCompareLiveView(APIView):
    """GET /v1/snapshots/{id}/compare/live: the snapshot against the live value cache."""

    @extend_schema(parameters=COMPARE_PARAMETERS, responses=ComparisonOutSerializer)
    def get(self, request: Request, snapshot_id: str) -> Response:
        result = compare.snapshot_compare_live(
            snapshot_id=snapshot_id, filters=compare_filters(request)
        )
        return Response(result.to_wire())


class _IgnoreFormatParam(DefaultContentNegotiation):
    """``?format=`` is the export's own parameter, not DRF's renderer override."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class SnapshotExportView(APIView):
    """GET /v1/snapshots/{id}/export?format=csv|json: a file download (errors enveloped)."""

    content_negotiation_class = _IgnoreFormatParam  # the file itself bypasses the renderer

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=export.EXPORT_FORMATS)],
        responses={
            (200, "application/json"): SnapshotExportOutSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
        },
        extensions={"x-envelope": False},
    )
    def get(self, request: Request, snapshot_id: str) -> StreamingHttpResponse:
        fmt = (request.query_params.get("format") or "json").lower()
        if fmt not in export.EXPORT_FORMATS:
            raise invalid(
                ["query", "format"],
                "Must be csv or json",
                "enum",
                message="Validation error: format: must be csv or json",
            )
        snapshot = services.snapshot_get(snapshot_id=snapshot_id)
        chunks = export.snapshot_export(snapshot=snapshot, fmt=fmt)
        response = StreamingHttpResponse(chunks, content_type=export.EXPORT_CONTENT_TYPES[fmt])
        filename = export.snapshot_export_filename(snapshot=snapshot, fmt=fmt)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


class _TextParser(BaseParser):
    """A CSV (or any text) body, as a string."""

    media_type = "text/*"

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return stream.read().decode("utf-8-sig", "replace") if stream is not None else ""


class SnapshotImportView(APIView):
    """POST /v1/snapshots/import: an export file (multipart ``file``, or the JSON or CSV as
    the body) as a new snapshot of kind ``imported``; ``title`` and ``format`` optional."""

    parser_classes = [MultiPartParser, JSONParser, _TextParser]

    @extend_schema(
        request={
            "multipart/form-data": OpenApiTypes.OBJECT,
            "text/csv": OpenApiTypes.STR,
            "application/json": SnapshotExportOutSerializer,
        },  # fmt: skip
        parameters=[
            OpenApiParameter("title", str, description="default: '<original title> (imported)'"),
            OpenApiParameter("format", str, enum=export.EXPORT_FORMATS),
        ],
        responses=SnapshotSummaryOutSerializer,
    )
    def post(self, request: Request) -> Response:
        data: Any = request.data
        fmt = request.query_params.get("format")
        title = request.query_params.get("title")
        if isinstance(data, str):
            content = data
        elif not isinstance(data, QueryDict):  # a JSON body, already parsed
            content = json.dumps(data)
            fmt = fmt or "json"
        else:  # multipart
            upload: Any = data.get("file")
            if upload is None or isinstance(upload, str):
                raise invalid(["body", "file"], "Field required", "missing")
            content = upload.read().decode("utf-8-sig", "replace")
            title = title or data.get("title")
            fmt = fmt or data.get("format") or None
        snapshot = importer.snapshot_import(
            content=content, fmt=fmt, title=title, actor=audit.actor_of(request)
        )
        return Response(snapshot_summary_dto(snapshot))

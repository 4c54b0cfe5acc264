"""Views of restores (contract §2.4 restore, §5; issue 5). Thin: parse, call one service, shape.

Large listings (plan items, per-PV outcomes: up to 50K rows) are streamed with
``squirrel.api.stream_json`` from raw rows; the stored JSON values are embedded as they are.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from snapshots.capture_views import query_bool
from snapshots.models import Restore, RestorePlan
from snapshots.restore.plan import (
    ACTION_BY_NAME,
    ACTION_NAMES,
    plan_age,
    restore_plan_create,
    restore_plan_get,
)
from snapshots.restore.records import (
    OUTCOME_BY_NAME,
    OUTCOME_NAMES,
    failures_list,
    outcome_rows,
    plan_items_rows,
    restore_get,
)
from snapshots.restore.request import (
    restore_plan_execute_request,
    restore_queued_message,
    restore_request,
    restore_revert_request,
)
from snapshots.restore.run import restore_reap_orphans, restore_run
from snapshots.restore.selection import Selection, selection_parse
from snapshots.serializers import (
    ACTION_CHOICES,
    OUTCOME_CHOICES,
    RestoreDetailOutSerializer,
    RestoreJobCreatedOutSerializer,
    RestoreOutSerializer,
    RestorePlanDetailOutSerializer,
    RestorePlanOutSerializer,
    RestoreResultOutSerializer,
    RestoreSelectionSerializer,
)
from squirrel.api import MAX_QUERY_INT, dumps, stream_json
from squirrel.auth import request_principal
from squirrel.exceptions import Invalid

MAX_LIST = 100

# --- OpenAPI parameters of these hand-parsed queries and headers ---------------------------------
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    # documented as printable ASCII (what a header carries); any printable text is accepted
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER,
    description="1..255 characters: a repeated request with the same key answers the first one",
)
ASYNC = OpenApiParameter("async", bool, description="default true: queue a job")


def _int_parameter(name: str, minimum: int, description: str = "") -> OpenApiParameter:
    schema = {"type": "integer", "minimum": minimum, "maximum": MAX_QUERY_INT}
    return OpenApiParameter(name, schema, description=description)


def _page_parameters(name: str, choices: list[str]) -> list[OpenApiParameter]:
    return [
        OpenApiParameter(name, str, enum=choices),
        _int_parameter("limit", 0, "absent: all"),
        _int_parameter("offset", 0),
    ]


def _created_by(request: Request) -> str | None:
    principal = request_principal(request)
    return principal.name if principal is not None else None


def _body(request: Request) -> dict[str, Any]:
    data = request.data
    if data is None or data == {} or data == "":
        return {}
    if not isinstance(data, dict):
        raise Invalid(
            "Validation error: body: expected an object",
            [{"loc": ["body"], "msg": "Input should be an object", "type": "dict_type"}],
        )
    return data


def _selection(request: Request) -> Selection:
    body = _body(request)
    return selection_parse(
        pv_ids=body.get("pvIds", body.get("pv_ids")),
        tag_filters=body.get("tagFilters", body.get("tag_filters")),
    )


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        msg = "1 to 255 printable characters"
        raise Invalid(
            f"Validation error: Idempotency-Key: {msg}",
            [{"loc": ["header", "Idempotency-Key"], "msg": msg, "type": "len"}],
        )
    return key


def _query_int(request: Request, name: str, default: int | None, *, minimum: int) -> int | None:
    """An integer query parameter in ``minimum..MAX_QUERY_INT``, else 422."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= MAX_QUERY_INT:
        msg = f"An integer from {minimum} to {MAX_QUERY_INT}"
        raise Invalid(
            f"Validation error: {name}: {msg.lower()}",
            [{"loc": ["query", name], "msg": msg, "type": "int"}],
        )
    return value


def _choice(request: Request, name: str, choices: dict[str, int]) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if raw not in choices:
        raise Invalid(
            f"Validation error: {name}: one of {', '.join(choices)}",
            [{"loc": ["query", name], "msg": f"Unknown {name} {raw!r}", "type": "enum"}],
        )
    return choices[raw]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_created_dto(restore: Restore) -> dict[str, Any]:
    """JobCreatedDTO (contract §2.4) plus the restore's id."""
    return {
        "jobId": str(restore.job_id),
        "message": restore_queued_message(restore.snapshot_id),
        "restoreId": str(restore.pk),
    }


def plan_dto(plan: RestorePlan) -> dict[str, Any]:
    age = plan_age(plan)
    executed = plan.restores.values_list("id", flat=True).first()
    return {
        "id": str(plan.pk),
        "snapshotId": str(plan.snapshot_id),
        "snapshotTitle": plan.snapshot.title,
        "createdAt": _iso(plan.created_at),
        "createdBy": plan.created_by,
        "ageSeconds": round(age, 3),
        "maxAgeSeconds": settings.PLAN_MAX_AGE,
        "executable": executed is None and age <= settings.PLAN_MAX_AGE,
        "restoreId": str(executed) if executed else None,
        "pvIds": [str(p) for p in plan.pv_ids] if plan.pv_ids is not None else None,
        "tagFilters": plan.tag_filters or [],
        "total": plan.total,
        "counts": plan.counts,
        "elapsedSeconds": round(plan.elapsed, 3),
    }


def restore_dto(restore: Restore) -> dict[str, Any]:
    return {
        "id": str(restore.pk),
        "kind": restore.kind,
        "status": restore.status,
        "jobId": str(restore.job_id) if restore.job_id else None,
        "snapshotId": str(restore.snapshot_id) if restore.snapshot_id else None,
        "snapshotTitle": restore.snapshot_title,
        "planId": str(restore.plan_id) if restore.plan_id else None,
        "safetySnapshotId": (
            str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None
        ),
        "revertsId": str(restore.reverts_id) if restore.reverts_id else None,
        "createdBy": restore.created_by,
        "createdAt": _iso(restore.created_at),
        "startedAt": _iso(restore.started_at),
        "finishedAt": _iso(restore.finished_at),
        "heartbeatAt": _iso(restore.heartbeat_at),
        "pvIds": [str(p) for p in restore.pv_ids] if restore.pv_ids is not None else None,
        "tagFilters": restore.tag_filters or [],
        "attempted": restore.attempted,
        "total": restore.total,
        "successCount": restore.success_count,
        "failureCount": restore.failure_count,
        "counts": restore.counts,
        "error": restore.error,
    }


def restore_result_dto(restore: Restore) -> dict[str, Any]:
    """RestoreResultDTO (contract §2.4, sync restore) plus counts and ids."""
    return {
        "totalPVs": restore.total,
        "successCount": restore.success_count,
        "failureCount": restore.failure_count,
        "failures": failures_list(restore=restore),
        "counts": restore.counts,
        "restoreId": str(restore.pk),
        "safetySnapshotId": (
            str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None
        ),
    }


def _raw(text: str | None) -> str:
    return text if text is not None else "null"


def _item_json(row: tuple) -> str:
    pv_id, name, sp, rb, action, saved, live, delta, note = row
    head = dumps(
        {
            "pvId": str(pv_id) if pv_id else None,
            "pvName": name,
            "setpointAddress": sp,
            "readbackAddress": rb,
            "action": ACTION_NAMES[action],
            "delta": delta,
            "note": note,
        }
    )
    return f'{head[:-1]},"savedValue":{_raw(saved)},"liveValue":{_raw(live)}}}'


def _outcome_json(row: tuple) -> str:
    pv_id, name, outcome, written, sp, rb, error = row
    head = dumps(
        {
            "pvId": str(pv_id) if pv_id else None,
            "pvName": name,
            "outcome": OUTCOME_NAMES[outcome],
            "error": error,
        }
    )
    return (
        f'{head[:-1]},"written":{_raw(written)},"setpointRead":{_raw(sp)},'
        f'"readbackRead":{_raw(rb)}}}'
    )


class SnapshotRestoreView(APIView):
    """POST /v1/snapshots/{id}/restore: plan + execute in one job (``async=false``: now)."""

    @extend_schema(
        request=RestoreSelectionSerializer,
        parameters=[ASYNC, IDEMPOTENCY_KEY],
        responses=PolymorphicProxySerializer(
            component_name="RestoreRequestResult",
            serializers=[RestoreJobCreatedOutSerializer, RestoreResultOutSerializer],
            resource_type_field_name=None,
        ),
    )
    def post(self, request: Request, snapshot_id: str) -> Response:
        run_async = query_bool(request, "async", True)
        restore = restore_request(
            snapshot_id=snapshot_id,
            selection=_selection(request),
            created_by=_created_by(request),
            idempotency_key=_idempotency_key(request),
            enqueue=run_async,
        )
        if run_async:
            return Response(job_created_dto(restore))
        if restore.status == Restore.Status.PENDING:
            restore_run(restore_id=str(restore.pk))
        restore.refresh_from_db()
        return Response(restore_result_dto(restore))


class SnapshotRestorePlanView(APIView):
    """POST /v1/snapshots/{id}/restore-plan: a dry run against the live values, stored."""

    @extend_schema(request=RestoreSelectionSerializer, responses=RestorePlanOutSerializer)
    def post(self, request: Request, snapshot_id: str) -> Response:
        plan = restore_plan_create(
            snapshot_id=snapshot_id,
            selection=_selection(request),
            created_by=_created_by(request),
        )
        return Response(plan_dto(plan))


class RestorePlanDetailView(APIView):
    """GET /v1/restore-plans/{id}: the plan with its items (``action``, ``limit``,
    ``offset``), writes first."""

    @extend_schema(
        parameters=_page_parameters("action", ACTION_CHOICES),
        responses=RestorePlanDetailOutSerializer,
    )
    def get(self, request: Request, plan_id: str) -> StreamingHttpResponse:
        action = _choice(request, "action", ACTION_BY_NAME)
        limit = _query_int(request, "limit", None, minimum=0)
        offset = _query_int(request, "offset", 0, minimum=0) or 0
        plan = restore_plan_get(plan_id=plan_id)
        rows = plan_items_rows(plan=plan, action=action, limit=limit, offset=offset)
        return stream_json(plan_dto(plan), "items", (_item_json(r) for r in rows), view=self)


class RestorePlanExecuteView(APIView):
    """POST /v1/restore-plans/{id}/execute: run exactly that plan (409 when too old)."""

    @extend_schema(
        request=None, parameters=[IDEMPOTENCY_KEY], responses=RestoreJobCreatedOutSerializer
    )
    def post(self, request: Request, plan_id: str) -> Response:
        restore = restore_plan_execute_request(
            plan_id=plan_id,
            created_by=_created_by(request),
            idempotency_key=_idempotency_key(request),
        )
        return Response(job_created_dto(restore))


class RestoreListView(APIView):
    """GET /v1/restores: the audit records, newest first (``limit`` ≤ 1000, ``offset``)."""

    @extend_schema(
        operation_id="v1_restores_list",
        parameters=[
            _int_parameter("limit", 1, "default 100; more than 1000 counts as 1000"),
            _int_parameter("offset", 0),
        ],
        responses=RestoreOutSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        limit = min(_query_int(request, "limit", MAX_LIST, minimum=1) or MAX_LIST, 1000)
        offset = _query_int(request, "offset", 0, minimum=0) or 0
        restore_reap_orphans()
        restores = Restore.objects.order_by("-created_at")[offset : offset + limit]
        return Response([restore_dto(r) for r in restores])


class RestoreDetailView(APIView):
    """GET /v1/restores/{id}: the record with every PV's outcome, failures first
    (``outcome``, ``limit``, ``offset``)."""

    @extend_schema(
        parameters=_page_parameters("outcome", OUTCOME_CHOICES),
        responses=RestoreDetailOutSerializer,
    )
    def get(self, request: Request, restore_id: str) -> StreamingHttpResponse:
        outcome = _choice(request, "outcome", OUTCOME_BY_NAME)
        limit = _query_int(request, "limit", None, minimum=0)
        offset = _query_int(request, "offset", 0, minimum=0) or 0
        restore_reap_orphans()
        restore = restore_get(restore_id=restore_id)
        rows = outcome_rows(restore=restore, outcome=outcome, limit=limit, offset=offset)
        return stream_json(
            restore_dto(restore), "outcomes", (_outcome_json(r) for r in rows), view=self
        )


class RestoreRevertView(APIView):
    """POST /v1/restores/{id}/revert: restore its safety snapshot, verified, as a new job."""

    @extend_schema(
        request=None, parameters=[IDEMPOTENCY_KEY], responses=RestoreJobCreatedOutSerializer
    )
    def post(self, request: Request, restore_id: str) -> Response:
        revert = restore_revert_request(
            restore_id=restore_id,
            created_by=_created_by(request),
            idempotency_key=_idempotency_key(request),
        )
        return Response(job_created_dto(revert))

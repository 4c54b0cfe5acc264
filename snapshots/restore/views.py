"""Views of restores (contract §2.4 restore, §5; issue 5). Thin: parse, call one service, shape.

Large listings (plan items, per-PV outcomes: up to 50K rows) are streamed with
``squirrel.api.stream_json`` from raw rows; the stored JSON values are embedded as they are.
"""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from snapshots.models import Restore
from snapshots.restore.plan import (
    ACTION_BY_NAME,
    restore_plan_create,
    restore_plan_get,
)
from snapshots.restore.records import (
    OUTCOME_BY_NAME,
    outcome_rows,
    plan_items_rows,
    restore_get,
)
from snapshots.restore.request import (
    restore_plan_approve,
    restore_plan_execute_request,
    restore_request,
    restore_revert_request,
)
from snapshots.restore.run import restore_reap_orphans, restore_run
from snapshots.restore.selection import Selection, selection_parse
from snapshots.restore.serializers import (
    ACTION_CHOICES,
    OUTCOME_CHOICES,
    RestoreDetailOutSerializer,
    RestoreExecuteSerializer,
    RestoreJobCreatedOutSerializer,
    RestoreOptionsSerializer,
    RestoreOutSerializer,
    RestorePlanDetailOutSerializer,
    RestorePlanOutSerializer,
    RestoreResultOutSerializer,
    RestoreSelectionSerializer,
    job_created_dto,
    outcome_json,
    plan_dto,
    plan_item_json,
    restore_dto,
    restore_result_dto,
)
from squirrel.api import MAX_QUERY_INT, stream_json
from squirrel.audit import actor_of
from squirrel.auth import MISSING_KEY, Principal, created_by, request_principal, require_scope
from squirrel.exceptions import NotPermitted
from squirrel.http import body_object, invalid, query_bool

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


def _selection(request: Request) -> Selection:
    body = body_object(request.data, empty_ok=True)
    return selection_parse(
        pv_ids=body.get("pvIds", body.get("pv_ids")),
        tag_filters=body.get("tagFilters", body.get("tag_filters")),
    )


def _stop_on_failure(request: Request) -> bool:
    """``stopOnFailure`` of the body (default false): after a stage with a failure, the later
    stages are not attempted."""
    body = body_object(request.data, empty_ok=True)
    raw = body.get("stopOnFailure", body.get("stop_on_failure", False))
    if not isinstance(raw, bool):
        raise invalid(
            ["body", "stopOnFailure"],
            "Input should be a valid boolean",
            "bool_type",
            message="Validation error: stopOnFailure: true or false",
        )
    return raw


def _restorer(request: Request) -> Principal:
    """The caller (whose scopes the view's permission already checked)."""
    principal = request_principal(request)
    if principal is None:  # ScopePermission lets no such request through
        raise NotPermitted(MISSING_KEY)
    return principal


def _planner(request: Request) -> Principal:
    """The caller of a plan or of its execution: the restore scope, or else write (a plan
    made with write alone awaits approval; only an approved one executes with it)."""
    principal = _restorer(request)
    return principal if principal.restore else require_scope(request, "write")


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        msg = "1 to 255 printable characters"
        raise invalid(["header", "Idempotency-Key"], msg, "len")
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
        raise invalid(
            ["query", name], msg, "int", message=f"Validation error: {name}: {msg.lower()}"
        )
    return value


def _choice(request: Request, name: str, choices: dict[str, int]) -> int | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if raw not in choices:
        raise invalid(
            ["query", name],
            f"Unknown {name} {raw!r}",
            "enum",
            message=f"Validation error: {name}: one of {', '.join(choices)}",
        )
    return choices[raw]


class SnapshotRestoreView(APIView):
    """POST /v1/snapshots/{id}/restore: plan + execute in one job (``async=false``: now).
    Restore scope."""

    required_scope = "restore"

    @extend_schema(
        request=RestoreOptionsSerializer,
        parameters=[ASYNC, IDEMPOTENCY_KEY],
        responses=PolymorphicProxySerializer(
            component_name="RestoreRequestResult",
            serializers=[RestoreJobCreatedOutSerializer, RestoreResultOutSerializer],
            resource_type_field_name=None,
        ),
    )
    def post(self, request: Request, snapshot_id: str) -> Response:
        run_async = query_bool(request.query_params, "async", True)
        restore = restore_request(
            snapshot_id=snapshot_id,
            selection=_selection(request),
            created_by=created_by(request),
            idempotency_key=_idempotency_key(request),
            enqueue=run_async,
            stop_on_failure=_stop_on_failure(request),
            permitted_tag_ids=_restorer(request).restore_tag_ids,
            actor=actor_of(request),
        )
        if run_async:
            return Response(job_created_dto(restore))
        if restore.status == Restore.Status.PENDING:
            restore_run(restore_id=str(restore.pk))
        restore.refresh_from_db()
        return Response(restore_result_dto(restore))


class SnapshotRestorePlanView(APIView):
    """POST /v1/snapshots/{id}/restore-plan: a dry run against the live values, stored. Write
    scope; made without the restore scope, it awaits approval."""

    required_scope = "read"  # and write or restore: _planner

    @extend_schema(request=RestoreSelectionSerializer, responses=RestorePlanOutSerializer)
    def post(self, request: Request, snapshot_id: str) -> Response:
        principal = _planner(request)
        plan = restore_plan_create(
            snapshot_id=snapshot_id,
            selection=_selection(request),
            created_by=created_by(request),
            may_restore=principal.restore,
            permitted_tag_ids=principal.restore_tag_ids,
            actor=actor_of(request),
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
        return stream_json(plan_dto(plan), "items", (plan_item_json(r) for r in rows), view=self)


class RestorePlanExecuteView(APIView):
    """POST /v1/restore-plans/{id}/execute: run exactly that plan (409 when too old or
    awaiting approval). Restore scope, or write scope for a plan that was approved."""

    required_scope = "read"  # and write or restore: _planner

    @extend_schema(
        request=RestoreExecuteSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses=RestoreJobCreatedOutSerializer,
    )
    def post(self, request: Request, plan_id: str) -> Response:
        principal = _planner(request)
        restore = restore_plan_execute_request(
            plan_id=plan_id,
            created_by=created_by(request),
            may_restore=principal.restore,
            permitted_tag_ids=principal.restore_tag_ids,
            idempotency_key=_idempotency_key(request),
            stop_on_failure=_stop_on_failure(request),
            actor=actor_of(request),
        )
        return Response(job_created_dto(restore))


class RestorePlanApproveView(APIView):
    """POST /v1/restore-plans/{id}/approve: a caller with the restore scope makes a plan
    awaiting approval executable (by its maker or the approver)."""

    required_scope = "restore"

    @extend_schema(request=None, responses=RestorePlanOutSerializer)
    def post(self, request: Request, plan_id: str) -> Response:
        principal = _restorer(request)
        plan = restore_plan_approve(
            plan_id=plan_id,
            approved_by=actor_of(request),
            permitted_tag_ids=principal.restore_tag_ids,
        )
        return Response(plan_dto(plan))


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
            restore_dto(restore), "outcomes", (outcome_json(r) for r in rows), view=self
        )


class RestoreRevertView(APIView):
    """POST /v1/restores/{id}/revert: restore its safety snapshot, verified, as a new job.
    Restore scope."""

    required_scope = "restore"

    @extend_schema(
        request=None, parameters=[IDEMPOTENCY_KEY], responses=RestoreJobCreatedOutSerializer
    )
    def post(self, request: Request, restore_id: str) -> Response:
        revert = restore_revert_request(
            restore_id=restore_id,
            created_by=created_by(request),
            idempotency_key=_idempotency_key(request),
            permitted_tag_ids=_restorer(request).restore_tag_ids,
            actor=actor_of(request),
        )
        return Response(job_created_dto(revert))

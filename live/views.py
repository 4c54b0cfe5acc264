"""The live-value routes under /v1/pvs and the health routes under /v1/health (contract §2.3,
§10). Thin: parse the input, call one function of monitor.health, answer its dict.

Only the heartbeat is enveloped among the health routes; the others were always bare
(``envelope = False``), and so are their errors (``{"detail": ...}``).
"""

from __future__ import annotations

import math
from typing import Any

import redis
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from live.fanout import fanout_status
from live.serializers import LiveRequestSerializer, TestEpicsQuerySerializer
from monitor import health
from pvs.models import PV
from squirrel.auth import request_principal, require_scope
from squirrel.exceptions import PayloadTooLarge, Unavailable
from squirrel.http import invalid, query_data, validated


def _names(data: Any) -> list[str]:
    """``pv_names`` of a POST body; 422 unless it is a list of strings."""
    if not isinstance(data, dict) or "pv_names" not in data:
        raise invalid(["body", "pv_names"], "Field required", "missing")
    names = data["pv_names"]
    if not isinstance(names, list):
        raise invalid(["body", "pv_names"], "Input should be a valid list", "list")
    for index, name in enumerate(names):
        if not isinstance(name, str):
            loc: list[str | int] = ["body", "pv_names", str(index)]
            raise invalid(loc, "Input should be a valid string", "string_type")
    return names


def _redis_failure(what: str, exc: redis.RedisError) -> Unavailable:
    return Unavailable(f"{what}: {exc}")


class LiveView(APIView):
    """Cached live values of the named PVs (POST body or repeated query ``pv_names``)."""

    required_scope = "read"  # contract §1.6: POST /v1/pvs/live needs only read

    @extend_schema(
        parameters=[OpenApiParameter("pv_names", str, many=True, required=True)],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        names = request.query_params.getlist("pv_names")
        if "pv_names" not in request.query_params:
            raise invalid(["query", "pv_names"], "Field required", "missing")
        return Response(health.live_read(names=names))

    @extend_schema(request=LiveRequestSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        try:
            data = request.data
        except RequestDataTooBig:
            raise PayloadTooLarge(
                "Request body too large: raise DATA_UPLOAD_MAX_MEMORY_SIZE or ask for fewer names"
            ) from None
        return Response(health.live_read(names=_names(data)))


class LiveAllView(APIView):
    """Every cached live value."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.live_read_all())


class CacheStatusView(APIView):
    """How many values the cache holds."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.cache_status())


class TestEpicsView(APIView):
    """A direct Channel Access read of one PV (diagnostic). Read scope reads the catalog's
    addresses; any other name needs write scope (it reads the machine beyond the catalog).
    Only staff see the EPICS address list."""

    @extend_schema(parameters=[TestEpicsQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = query_data(request.query_params, "pv")
        pv = validated(TestEpicsQuerySerializer(data=query), "query").get("pv")
        pv = pv or health.DEFAULT_TEST_PV
        if not PV.objects.with_address(pv).exists():
            require_scope(request, "write")
        principal = request_principal(request)
        staff = principal is not None and principal.staff
        return Response(health.epics_test(pv=pv, show_addresses=staff))


class HeartbeatView(APIView):
    """The monitor's heartbeat: no auth, enveloped, always 200."""

    authentication_classes: list = []
    required_scope = "none"

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.heartbeat_read())


class BareHealthView(APIView):
    """Health routes other than the heartbeat answer bare bodies."""

    envelope = False


class MonitorHealthView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        try:
            return Response(health.monitor_health())
        except redis.RedisError as exc:
            raise _redis_failure("Health check failed", exc) from exc


class MonitorStatusView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.monitor_status())


class SummaryView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.summary_read())


class DisconnectedView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        try:
            return Response(health.disconnected_read())
        except redis.RedisError as exc:
            raise _redis_failure("Failed to get disconnected PVs", exc) from exc


class StaleView(BareHealthView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "max_age_seconds",
                {"type": "number", "minimum": 0, "exclusiveMinimum": True},
                required=False,
                description=f"default {health.DEFAULT_STALE_SECONDS}",
            )
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request) -> Response:
        max_age = _max_age(request.query_params.get("max_age_seconds"))
        try:
            return Response(health.stale_read(max_age=max_age))
        except redis.RedisError as exc:
            raise _redis_failure("Failed to get stale PVs", exc) from exc


def _max_age(raw: str | None) -> float:
    if raw is None:
        return health.DEFAULT_STALE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        msg = "Input should be a number greater than 0"
        raise invalid(["query", "max_age_seconds"], msg, "greater_than")
    return int(value) if value.is_integer() else value


class WatchdogView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        try:
            return Response(health.watchdog_read())
        except redis.RedisError as exc:
            raise _redis_failure("Failed to get watchdog status", exc) from exc


class WatchdogCheckView(BareHealthView):
    """Recount disconnected and stale PVs from the cache now (write scope)."""

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        try:
            return Response(health.watchdog_check())
        except redis.RedisError as exc:
            raise _redis_failure("Watchdog check failed", exc) from exc


class CircuitsView(BareHealthView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(health.circuits_summary())


class CircuitForceView(BareHealthView):
    """Force one IOC's circuit breaker open or closed (write scope)."""

    state = "closed"

    @extend_schema(request=None, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request, name: str) -> Response:
        return Response(health.circuit_set(name=name, state=self.state))


class WebSocketStatusView(APIView):
    """This web process's WebSocket fan-out (contract §4.6, never enveloped)."""

    envelope = False

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response(fanout_status())

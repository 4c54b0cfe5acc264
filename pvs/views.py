"""The /v1/pvs catalog routes (contract §2.3; the live-value routes are monitor's).

Thin: validate input with a serializer, call one service or queryset, answer DTOs built by
``pvs.serializers.pv_elements``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pvs import services
from pvs.models import PV
from pvs.serializers import (
    PagedOutSerializer,
    PagedQuerySerializer,
    PVCreateSerializer,
    PVElementOutSerializer,
    PVListQuerySerializer,
    PVUpdateSerializer,
    RestorePolicyOutSerializer,
    RestorePolicySerializer,
    SearchOutSerializer,
    SearchQuerySerializer,
    pv_create_kwargs,
    pv_element,
    pv_elements,
    pv_elements_in_order,
)
from squirrel import audit
from squirrel.exceptions import PayloadTooLarge
from squirrel.http import invalid, query_data, valid

UNPAGED_LIMIT = 1000


class PVListView(APIView):
    """GET: the first 1000 PVs (id order) matching ``pvName``. POST: create one PV."""

    @extend_schema(parameters=[PVListQuerySerializer], responses=PVElementOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        query = valid(PVListQuerySerializer(data=query_data(request.query_params)), "query")
        qs = PV.objects.matching(query.validated_data.get("pvName")).order_by("id")
        return Response(pv_elements(qs[:UNPAGED_LIMIT]))

    @extend_schema(request=PVCreateSerializer, responses=PVElementOutSerializer)
    def post(self, request: Request) -> Response:
        serializer = valid(PVCreateSerializer(data=request.data))
        return Response(
            pv_element(services.pv_create(**serializer.to_service(), actor=audit.actor_of(request)))
        )


class PVPagedView(APIView):
    """GET: one page by continuation token (the last returned row's id)."""

    @extend_schema(parameters=[PagedQuerySerializer], responses=PagedOutSerializer)
    def get(self, request: Request) -> Response:
        query = valid(PagedQuerySerializer(data=query_data(request.query_params)), "query")
        size = query.validated_data["pageSize"]
        qs = (
            PV.objects.matching(query.validated_data.get("pvName"))
            .with_tag_filters(query.tag_groups())
            .order_by("id")
        )
        total = qs.count()
        results = pv_elements(qs.after(query.token())[: size + 1])
        token = results[size - 1]["id"] if len(results) > size else None
        return Response(
            {"results": results[:size], "continuationToken": token, "totalCount": total}
        )


class PVMultiView(APIView):
    """POST: create many PVs, all or nothing."""

    @extend_schema(
        request=PVCreateSerializer(many=True), responses=PVElementOutSerializer(many=True)
    )
    def post(self, request: Request) -> Response:
        try:
            data = request.data
        except RequestDataTooBig:
            raise PayloadTooLarge(
                "Request body too large: raise SQUIRREL_MAX_BODY_MB or use manage.py import_pvs"
            ) from None
        if not isinstance(data, list):
            raise invalid(
                ["body"],
                "Input should be a valid array",
                "list_type",
                message="Validation error: body: expected a JSON array of PVs",
            )
        serializer = valid(PVCreateSerializer(data=data, many=True))
        items = [services.NewPV(**pv_create_kwargs(d)) for d in serializer.validated_data]
        pvs = services.pv_create_many(items=items, actor=audit.actor_of(request))
        return Response(pv_elements_in_order([p.pk for p in pvs]))


class PVDetailView(APIView):
    """PUT: change description, tolerances, read-only, tags. DELETE: remove the PV."""

    @extend_schema(request=PVUpdateSerializer, responses=PVElementOutSerializer)
    def put(self, request: Request, pv_id: str) -> Response:
        services.pv_get(pv_id=pv_id)
        serializer = valid(PVUpdateSerializer(data=request.data))
        pv = services.pv_update(
            pv_id=pv_id, **serializer.to_service(), actor=audit.actor_of(request)
        )
        return Response(pv_element(pv))

    @extend_schema(
        parameters=[OpenApiParameter("archive", bool, required=False)],
        responses={200: OpenApiTypes.BOOL},  # the contract answers 200 true, never 204
    )
    def delete(self, request: Request, pv_id: str) -> Response:
        services.pv_delete(pv_id=pv_id, actor=audit.actor_of(request))
        return Response(True)


class PVRestorePolicyView(APIView):
    """PUT: the restore stage and/or completion timeout of every PV of a tag (issue 18)."""

    @extend_schema(request=RestorePolicySerializer, responses=RestorePolicyOutSerializer)
    def put(self, request: Request) -> Response:
        data = valid(RestorePolicySerializer(data=request.data)).validated_data
        count = services.pv_restore_policy_set(
            tag_id=data["tagId"],
            restore_stage=data.get("restoreStage"),
            completion_timeout=data.get("completionTimeout"),
            actor=audit.actor_of(request),
        )
        return Response({"tagId": str(data["tagId"]), "updated": count})


class PVSearchView(APIView):
    """GET: limit/offset search by text, devices and tags, ordered by setpoint address in
    natural order (``DEV2`` before ``DEV10``; a read-back-only PV by the readback address its
    DTO shows as ``setpointAddress``): the PV browser's query."""

    @extend_schema(parameters=[SearchQuerySerializer], responses=SearchOutSerializer)
    def get(self, request: Request) -> Response:
        data = query_data(request.query_params, lists=("devices", "tags"))
        query = valid(SearchQuerySerializer(data=data), "query").validated_data
        qs = (
            PV.objects.matching(query.get("q"))
            .with_devices(query["devices"])
            .with_any_tag(query["tags"])
            .natural_order()
        )
        limit, offset = query["limit"], query["offset"]
        results = pv_elements(qs[offset : offset + limit])
        body: dict[str, Any] = {
            "results": results,
            "totalCount": qs.count(),
            "limit": limit,
            "offset": offset,
            "liveValues": None,
            "liveValuesError": None,
        }
        if query["include_live_values"]:
            body["liveValues"], body["liveValuesError"] = services.pv_live_values(
                addresses=[a for r in results for a in (r["setpointAddress"], r["readbackAddress"])]
            )
        return Response(body)


class PVDevicesView(APIView):
    """GET: the sorted distinct device names."""

    @extend_schema(responses=serializers.ListSerializer(child=serializers.CharField()))
    def get(self, request: Request) -> Response:
        return Response(PV.objects.device_names())

"""The /v1/tags family (contract §2.5). Thin: parse, call one service, shape the output."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from squirrel.audit import actor_of
from squirrel.http import validated
from tags import services
from tags.serializers import (
    TagCreateQuerySerializer,
    TagCreateSerializer,
    TagGroupCreateSerializer,
    TagGroupOutSerializer,
    TagGroupSummaryOutSerializer,
    TagGroupUpdateSerializer,
    TagsBulkOutSerializer,
    TagsBulkSerializer,
    TagUpdateSerializer,
    tag_group_dto,
    tag_group_summaries,
)


class TagGroupListView(APIView):
    """GET: every group with its tag count. POST: create a group."""

    @extend_schema(responses=TagGroupSummaryOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(tag_group_summaries())

    @extend_schema(request=TagGroupCreateSerializer, responses=TagGroupOutSerializer)
    def post(self, request: Request) -> Response:
        group = services.tag_group_create(
            **validated(TagGroupCreateSerializer(data=request.data)), actor=actor_of(request)
        )
        return Response(tag_group_dto(group))


class TagGroupDetailView(APIView):
    """GET: the group as a one-element array (contract §12.4). PUT, DELETE."""

    @extend_schema(operation_id="v1_tags_retrieve", responses=TagGroupOutSerializer(many=True))
    def get(self, request: Request, group_id: str) -> Response:
        return Response([tag_group_dto(services.tag_group_get(group_id=group_id))])

    @extend_schema(request=TagGroupUpdateSerializer, responses=TagGroupOutSerializer)
    def put(self, request: Request, group_id: str) -> Response:
        data = validated(TagGroupUpdateSerializer(data=request.data))
        return Response(
            tag_group_dto(
                services.tag_group_update(group_id=group_id, **data, actor=actor_of(request))
            )
        )

    @extend_schema(
        parameters=[OpenApiParameter("force", bool, required=False)],
        responses={200: OpenApiTypes.BOOL},  # the contract answers 200 true, never 204
    )
    def delete(self, request: Request, group_id: str) -> Response:
        services.tag_group_delete(group_id=group_id, actor=actor_of(request))
        return Response(True)


class TagListView(APIView):
    """POST: add a tag to a group; answers the group (JAN shape)."""

    @extend_schema(
        request=TagCreateSerializer,
        parameters=[TagCreateQuerySerializer],
        responses=TagGroupOutSerializer,
    )
    def post(self, request: Request, group_id: str) -> Response:
        services.tag_group_get(group_id=group_id)
        data = validated(TagCreateSerializer(data=request.data))
        query = validated(TagCreateQuerySerializer(data=request.query_params), "query")
        group, _ = services.tag_create(group_id=group_id, **data, **query, actor=actor_of(request))
        return Response(tag_group_dto(group))


class TagDetailView(APIView):
    """PUT/DELETE one tag; both answer the whole group."""

    @extend_schema(request=TagUpdateSerializer, responses=TagGroupOutSerializer)
    def put(self, request: Request, group_id: str, tag_id: str) -> Response:
        data = validated(TagUpdateSerializer(data=request.data))
        group = services.tag_update(
            group_id=group_id, tag_id=tag_id, **data, actor=actor_of(request)
        )
        return Response(tag_group_dto(group))

    @extend_schema(responses={200: TagGroupOutSerializer})  # 200 with a body, never 204
    def delete(self, request: Request, group_id: str, tag_id: str) -> Response:
        group = services.tag_delete(group_id=group_id, tag_id=tag_id, actor=actor_of(request))
        return Response(tag_group_dto(group))


class TagBulkView(APIView):
    """POST: create groups and tags by name in one call (HEAD's /v1/tags/bulk)."""

    @extend_schema(request=TagsBulkSerializer, responses=TagsBulkOutSerializer)
    def post(self, request: Request) -> Response:
        result = services.tags_bulk_create(
            **validated(TagsBulkSerializer(data=request.data)), actor=actor_of(request)
        )
        return Response(
            {
                "groupsCreated": result.groups_created,
                "tagsCreated": result.tags_created,
                "tagsSkipped": result.tags_skipped,
                "warnings": result.warnings,
            }
        )

"""The /v1/api-keys routes (contract §2.7). Thin: parse, call one service, shape the DTO.

Listing and counting keys need read scope (contract); creating and deactivating them need the
admin scope (staff users, keys created with it; never an anonymous caller), and 401 otherwise.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from squirrel import services
from squirrel.audit import actor_of
from squirrel.auth import created_by, request_principal
from squirrel.hooks import tag_ids_check
from squirrel.http import body_object, query_data, validated
from squirrel.models import ApiKey

RESTORE_HELP = "may write the machine: restore, execute and approve restore plans, revert"


def api_key_dto(key: ApiKey) -> dict[str, Any]:
    """ApiKeyDTO: ``{id, appName, isActive, readAccess, writeAccess, createdAt, updatedAt}``,
    and as extra keys ``adminAccess``, ``restoreAccess``, ``restoreTagIds`` (null: every PV)
    and ``createdBy`` (null for keys older than it)."""
    return {
        "id": str(key.pk),
        "appName": key.app_name,
        "isActive": key.is_active,
        "readAccess": key.read_access,
        "writeAccess": key.write_access,
        "adminAccess": key.admin_access,
        "restoreAccess": key.restore_access,
        "restoreTagIds": [str(t) for t in key.restore_tag_ids] if key.restore_tag_ids else None,
        "createdBy": key.created_by,
        "createdAt": key.created_at.isoformat(),
        "updatedAt": key.updated_at.isoformat(),
    }


class ApiKeyCreateSerializer(serializers.Serializer):
    """POST body: the contract's three fields are required; ``adminAccess`` is optional."""

    appName = serializers.CharField(max_length=255)
    readAccess = serializers.BooleanField()
    writeAccess = serializers.BooleanField()
    adminAccess = serializers.BooleanField(
        default=False, help_text="may create and deactivate API keys"
    )
    restoreAccess = serializers.BooleanField(default=False, help_text=RESTORE_HELP)
    restoreTagIds = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        allow_null=True,
        allow_empty=False,
        help_text="restore only PVs carrying one of these tags (absent or null: every PV)",
    )


class ApiKeyListQuerySerializer(serializers.Serializer):
    """``active_only`` (default false): skip deactivated keys."""

    active_only = serializers.BooleanField(default=False)


class ApiKeyDeleteQuerySerializer(serializers.Serializer):
    """``force`` (default false): deactivate even the key making the request."""

    force = serializers.BooleanField(default=False)


class ApiKeyOutSerializer(serializers.Serializer):
    """ApiKeyDTO, for the OpenAPI schema only."""

    id = serializers.UUIDField()
    appName = serializers.CharField()
    isActive = serializers.BooleanField()
    readAccess = serializers.BooleanField()
    writeAccess = serializers.BooleanField()
    adminAccess = serializers.BooleanField()
    restoreAccess = serializers.BooleanField(help_text=RESTORE_HELP)
    restoreTagIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)
    createdBy = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()


class ApiKeyCreatedOutSerializer(ApiKeyOutSerializer):
    token = serializers.CharField(help_text="shown only in this answer")


def _query(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The serializer's flags from the query string (an empty value counts as absent)."""
    names = tuple(serializer_class().fields)
    data = query_data(request.query_params, *names, blank_is_absent=True)
    return validated(serializer_class(data=data), "query")


def _keys(request: Request):
    keys = ApiKey.objects.all()
    return (
        keys.filter(is_active=True)
        if _query(request, ApiKeyListQuerySerializer)["active_only"]
        else keys
    )


class ApiKeyListView(APIView):
    """GET: every key (``active_only`` to skip deactivated ones). POST (admin scope): create a
    key; the answer is the only place its token ever appears."""

    required_scope = {"POST": "admin"}

    @extend_schema(parameters=[ApiKeyListQuerySerializer], responses=ApiKeyOutSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response([api_key_dto(k) for k in _keys(request)])

    @extend_schema(request=ApiKeyCreateSerializer, responses=ApiKeyCreatedOutSerializer)
    def post(self, request: Request) -> Response:
        data = validated(ApiKeyCreateSerializer(data=body_object(request.data)))
        tag_ids_check(data.get("restoreTagIds"), "restoreTagIds")  # the wire's name in the 422
        created = services.api_key_create(
            app_name=data["appName"],
            read_access=data["readAccess"],
            write_access=data["writeAccess"],
            admin_access=data["adminAccess"],
            restore_access=data["restoreAccess"],
            restore_tag_ids=data.get("restoreTagIds"),
            created_by=created_by(request),
        )
        return Response({**api_key_dto(created.key), "token": created.token})


class ApiKeyCountView(APIView):
    """GET: the number of keys (``active_only``), a bare integer payload."""

    @extend_schema(parameters=[ApiKeyListQuerySerializer], responses=OpenApiTypes.INT)
    def get(self, request: Request) -> Response:
        return Response(_keys(request).count())


class ApiKeyDetailView(APIView):
    """DELETE (admin scope): deactivate a key; answers the deactivated ApiKeyDTO."""

    required_scope = "admin"

    @extend_schema(
        parameters=[ApiKeyDeleteQuerySerializer],
        responses={200: ApiKeyOutSerializer},  # 200 with a body, never 204
    )
    def delete(self, request: Request, key_id: str) -> Response:
        principal = request_principal(request)
        key = services.api_key_deactivate(
            key_id=key_id,
            current_key_id=principal.api_key_id if principal is not None else None,
            force=_query(request, ApiKeyDeleteQuerySerializer)["force"],
            actor=actor_of(request),
        )
        return Response(api_key_dto(key))

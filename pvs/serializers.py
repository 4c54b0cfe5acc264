"""Request shapes of the PV API and the one builder of PVElementDTO (contract §2.2).

Output is never built with serializer instances: ``pv_elements`` reads ``.values_list`` rows
and the page's tags in one more query, so a 1000-row page costs two queries.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import CharField, Func, OuterRef, QuerySet
from django.db.models.functions import Cast
from rest_framework import serializers

from pvs.models import CATALOG_FIELDS, PV, read_only_rule
from squirrel.api import MAX_QUERY_INT
from squirrel.exceptions import BadRequest
from tags.models import Tag
from tags.serializers import TagOutSerializer, tag_dto


class _IsoText(Func):
    """A timestamptz as ISO 8601 text with its offset, formatted by PostgreSQL: parsing 2000
    timestamps a page in Python costs 13 ms, formatting them in SQL 0.4 ms."""

    template = "to_json(%(expressions)s) #>> '{}'"
    output_field = CharField()


# Ids are read as text too: 1000 UUID objects a page are garbage-collector work for nothing.
_PV_COLUMNS = (
    Cast("id", CharField()),
    *CATALOG_FIELDS,
    _IsoText("created_at"),
    _IsoText("updated_at"),
)


MAX_STAGE = 32767
STAGE_HELP = "restores write stage 0 first, then 1, ...; each stage verified before the next"
TIMEOUT_HELP = "seconds a restore waits for this PV's put to complete (null: the default)"


def _address() -> serializers.CharField:
    # Trimming is the service's rule (blank after trimming is a 409), so not done here.
    return serializers.CharField(
        max_length=255, allow_null=True, allow_blank=True, required=False, trim_whitespace=False
    )


class PVCreateSerializer(serializers.Serializer):
    """NewPVElementDTO."""

    setpointAddress = _address()
    readbackAddress = _address()
    configAddress = _address()
    device = _address()
    description = serializers.CharField(
        allow_null=True, allow_blank=True, required=False, trim_whitespace=False
    )
    absTolerance = serializers.FloatField(min_value=0.0, required=False, default=0.0)
    relTolerance = serializers.FloatField(min_value=0.0, required=False, default=0.0)
    readOnly = serializers.BooleanField(required=False, default=False)
    restoreStage = serializers.IntegerField(
        min_value=0, max_value=MAX_STAGE, required=False, default=0, help_text=STAGE_HELP
    )
    completionTimeout = serializers.FloatField(
        min_value=0.0, allow_null=True, required=False, default=None, help_text=TIMEOUT_HELP
    )
    tags = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not any(attrs.get(f) for f in ("setpointAddress", "readbackAddress", "configAddress")):
            raise serializers.ValidationError(
                "At least one address (setpoint, readback, or config) is required"
            )
        return attrs

    def to_service(self) -> dict[str, Any]:
        """validated_data as ``pv_create`` keyword arguments."""
        return pv_create_kwargs(self.validated_data)


def pv_create_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "setpoint_address": data.get("setpointAddress"),
        "readback_address": data.get("readbackAddress"),
        "config_address": data.get("configAddress"),
        "device": data.get("device"),
        "description": data.get("description"),
        "abs_tolerance": data["absTolerance"],
        "rel_tolerance": data["relTolerance"],
        "read_only": data["readOnly"],
        "restore_stage": data.get("restoreStage", 0),
        "completion_timeout": data.get("completionTimeout"),
        "tag_ids": data["tags"],
    }


class PVUpdateSerializer(serializers.Serializer):
    """UpdatePVElementDTO: every field optional; null means unchanged."""

    description = serializers.CharField(
        allow_null=True, allow_blank=True, required=False, trim_whitespace=False
    )
    absTolerance = serializers.FloatField(min_value=0.0, allow_null=True, required=False)
    relTolerance = serializers.FloatField(min_value=0.0, allow_null=True, required=False)
    readOnly = serializers.BooleanField(allow_null=True, required=False)
    restoreStage = serializers.IntegerField(
        min_value=0, max_value=MAX_STAGE, allow_null=True, required=False, help_text=STAGE_HELP
    )
    completionTimeout = serializers.FloatField(
        min_value=0.0,
        allow_null=True,
        required=False,
        help_text=TIMEOUT_HELP + "; 0 sets it back to the default (null leaves it unchanged)",
    )
    tags = serializers.ListField(child=serializers.UUIDField(), allow_null=True, required=False)

    def to_service(self) -> dict[str, Any]:
        data = self.validated_data
        return {
            "description": data.get("description"),
            "abs_tolerance": data.get("absTolerance"),
            "rel_tolerance": data.get("relTolerance"),
            "read_only": data.get("readOnly"),
            "restore_stage": data.get("restoreStage"),
            "completion_timeout": data.get("completionTimeout"),
            "tag_ids": data.get("tags"),
        }


class RestorePolicySerializer(serializers.Serializer):
    """PUT /v1/pvs/restore-policy: the restore stage and/or completion timeout of every PV
    carrying a tag, in one call."""

    tagId = serializers.UUIDField()
    restoreStage = serializers.IntegerField(
        min_value=0, max_value=MAX_STAGE, required=False, allow_null=True, help_text=STAGE_HELP
    )
    completionTimeout = serializers.FloatField(
        min_value=0.0,
        required=False,
        allow_null=True,
        help_text=TIMEOUT_HELP + "; 0 sets it back to the default",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("restoreStage") is None and attrs.get("completionTimeout") is None:
            raise serializers.ValidationError("Give restoreStage and/or completionTimeout")
        return attrs


class RestorePolicyOutSerializer(serializers.Serializer):
    tagId = serializers.UUIDField()
    updated = serializers.IntegerField(help_text="PVs of the tag whose policy changed")


class PVListQuerySerializer(serializers.Serializer):
    """Query of GET /v1/pvs."""

    pvName = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class PagedQuerySerializer(serializers.Serializer):
    """Query of GET /v1/pvs/paged."""

    pvName = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    pageSize = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=100)
    continuationToken = serializers.CharField(required=False, allow_blank=True)
    tagFilters = serializers.CharField(required=False, allow_blank=True)

    def token(self) -> uuid.UUID | None:
        raw = self.validated_data.get("continuationToken")
        if not raw:
            return None
        try:
            return uuid.UUID(raw)
        except ValueError:
            raise BadRequest(f"Invalid continuationToken: {raw!r} is not a PV id") from None

    def tag_groups(self) -> list[list[uuid.UUID]]:
        return parse_tag_filters(self.validated_data.get("tagFilters"))


def parse_tag_filters(raw: str | None) -> list[list[uuid.UUID]]:
    """``{"<groupId>": ["<tagId>", ...]}`` as a list of tag-id groups; 400 when malformed."""
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"Invalid tagFilters JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Invalid tagFilters JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("Invalid tagFilters JSON: expected an object of group id -> tag ids")
    groups: list[list[uuid.UUID]] = []
    for key, tag_ids in data.items():
        if not isinstance(tag_ids, list):
            raise BadRequest(f"Invalid tagFilters JSON: value of {key!r} is not a list")
        try:
            groups.append([uuid.UUID(str(t)) for t in tag_ids])
        except ValueError:
            raise BadRequest(f"Invalid tagFilters JSON: tag ids of {key!r} must be UUIDs") from None
    return groups


class SearchQuerySerializer(serializers.Serializer):
    """Query of GET /v1/pvs/search."""

    q = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    devices = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    tags = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)
    limit = serializers.IntegerField(min_value=0, max_value=1000, required=False, default=100)
    offset = serializers.IntegerField(
        min_value=0, max_value=MAX_QUERY_INT, required=False, default=0
    )
    include_live_values = serializers.BooleanField(required=False, default=False)


def _tag_ids() -> ArraySubquery:
    """The PV's tag ids as a text array, read with the row (one index probe per PV)."""
    links = PV.tags.through.objects.filter(pv_id=OuterRef("pk"))
    return ArraySubquery(links.values(tid=Cast("tag_id", CharField())))


def tag_dtos(tag_ids: set[str]) -> dict[str, dict[str, Any]]:
    """TagDTO of each id, one query (one shared dict per tag however many PVs carry it)."""
    rows = Tag.objects.filter(pk__in=tag_ids).values_list(
        Cast("id", CharField()), "name", "description"
    )
    return {row[0]: tag_dto(*row) for row in rows}


def pv_elements(queryset: QuerySet[PV]) -> list[dict[str, Any]]:
    """PVElementDTOs of the queryset's rows, in its order: the one source of that shape.

    Two queries whatever the number of rows: the rows with their tag ids, then those tags.
    Tags are ordered by name, then id.
    """
    rows = list(queryset.values_list(*_PV_COLUMNS, _tag_ids()))
    dtos = tag_dtos({t for row in rows for t in row[-1]})

    def tags(ids: list[str]) -> list[dict[str, Any]]:
        found = [dtos[t] for t in ids if t in dtos]
        if len(found) > 1:
            found.sort(key=lambda d: (d["name"], d["id"]))
        return found

    return [
        {
            "id": pk,
            # A read-back-only PV shows its readback as its setpoint address, read-only: the
            # React frontend drops rows with no setpointAddress (README "Read-back-only PVs").
            "setpointAddress": sp if sp else rb,
            "readbackAddress": rb,
            "configAddress": cfg,
            "device": device,
            "description": description,
            "absTolerance": abs_tol,
            "relTolerance": rel_tol,
            "readOnly": read_only_rule(read_only, sp),
            "restoreStage": stage,
            "completionTimeout": completion_timeout,
            "tags": tags(tag_ids),
            "createdDate": created,
            "lastModifiedDate": updated,
            "createdBy": None,
            "lastModifiedBy": None,
        }
        for (
            pk,
            sp,
            rb,
            cfg,
            device,
            description,
            abs_tol,
            rel_tol,
            read_only,
            stage,
            completion_timeout,
            created,
            updated,
            tag_ids,
        ) in rows
    ]


def pv_elements_in_order(pv_ids: list[Any]) -> list[dict[str, Any]]:
    """PVElementDTOs of these PVs in the order given (10,000 ids a query)."""
    by_id: dict[str, dict[str, Any]] = {}
    for start in range(0, len(pv_ids), 10_000):
        chunk = pv_ids[start : start + 10_000]
        by_id.update((e["id"], e) for e in pv_elements(PV.objects.filter(pk__in=chunk)))
    return [by_id[str(pk)] for pk in pv_ids]


def pv_element(pv: PV) -> dict[str, Any]:
    """One PV's DTO (re-read, so it shows exactly what was committed)."""
    return pv_elements(PV.objects.filter(pk=pv.pk))[0]


# --- response shapes, for the OpenAPI schema only (``pv_elements`` produces them) ------------


class PVElementOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    setpointAddress = serializers.CharField(allow_null=True)
    readbackAddress = serializers.CharField(allow_null=True)
    configAddress = serializers.CharField(allow_null=True)
    device = serializers.CharField(allow_null=True)
    description = serializers.CharField(allow_null=True)
    absTolerance = serializers.FloatField()
    relTolerance = serializers.FloatField()
    readOnly = serializers.BooleanField()
    restoreStage = serializers.IntegerField(help_text=STAGE_HELP)
    completionTimeout = serializers.FloatField(allow_null=True, help_text=TIMEOUT_HELP)
    tags = TagOutSerializer(many=True)
    createdDate = serializers.DateTimeField()
    lastModifiedDate = serializers.DateTimeField()
    createdBy = serializers.CharField(allow_null=True)
    lastModifiedBy = serializers.CharField(allow_null=True)


class PagedOutSerializer(serializers.Serializer):
    results = PVElementOutSerializer(many=True)
    continuationToken = serializers.UUIDField(allow_null=True)
    totalCount = serializers.IntegerField()


class SearchOutSerializer(serializers.Serializer):
    results = PVElementOutSerializer(many=True)
    totalCount = serializers.IntegerField()
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    liveValues = serializers.DictField(allow_null=True)
    liveValuesError = serializers.CharField(allow_null=True)

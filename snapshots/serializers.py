"""Request and response shapes of the snapshot read API (contract §2.2, §2.4). Never writes.

``snapshot_summary_dto`` is THE SnapshotSummaryDTO (list, PUT, sync create); ``value_row_json``
encodes one PVValueDTO straight from a ``snapshots.storage.snapshot_value_rows`` row to JSON
text, so a 50K-value snapshot streams without 50K dicts held at once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from rest_framework import serializers

from snapshots.codec import DISPLAY_WIDTH, KIND_ENUM, KIND_FLOAT, SOURCE_NAMES, side_wire_value
from snapshots.models import Snapshot
from squirrel.api import MAX_QUERY_INT

LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 1000


def snapshot_summary_dto(snapshot: Snapshot) -> dict[str, Any]:
    """SnapshotSummaryDTO with both ``comment`` and ``description`` (decision 3) and the
    completeness counts as extra keys."""
    return {
        "id": str(snapshot.pk),
        "title": snapshot.title,
        "comment": snapshot.description,
        "description": snapshot.description,
        "createdDate": snapshot.created_at.isoformat(),
        "createdBy": snapshot.created_by,
        "pvCount": snapshot.pv_count,
        "liveCount": snapshot.live_count,
        "staleCount": snapshot.stale_count,
        "rereadCount": snapshot.reread_count,
        "failedCount": snapshot.failed_count,
        "kind": snapshot.kind,
        "labels": list(snapshot.labels),
        "scheduleId": str(snapshot.schedule_id) if snapshot.schedule_id else None,
        "selection": snapshot.selection,
    }


def snapshot_summary_meta_dto(
    snapshot: Snapshot, metadata: dict[str, Any] | None
) -> dict[str, Any]:
    """The summary plus ``metadataPVs`` (address -> saved value; null when not saved), as
    ``GET /v1/snapshots?metadataPVs=...`` answers."""
    return {**snapshot_summary_dto(snapshot), "metadataPVs": metadata or {}}


def iso_utc(epoch: float | None) -> str | None:
    """An epoch timestamp as ISO 8601 UTC with its offset (``...+00:00``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def epics_value_dto(row: tuple[Any, ...], at: int) -> dict[str, Any] | None:
    """EpicsValueDTO of the side stored at ``row[at:at + DISPLAY_WIDTH]`` (None when nothing
    was captured for it). Indexes the row in place (``codec.SIDE_READ`` then
    ``codec.DISPLAY_META``): this runs 100K times per 50K snapshot.

    Contract keys: value (an enum's integer index, as CA returns it), status, severity,
    timestamp, units, precision, upper_ctrl_limit, lower_ctrl_limit. Extra keys: ``label``
    (the enum string, else null) and the quality of the read: ``source`` ("cache"/"direct"),
    ``age`` (seconds the cached value was old), ``connected``, ``error``.
    """
    kind = row[at]
    source = row[at + 7]
    error = row[at + 10]
    if kind is None and source is None and error is None:
        return None
    ts = row[at + 6]
    return {
        "value": (
            row[at + 1] if kind == KIND_FLOAT else side_wire_value(kind, *row[at + 1 : at + 4])
        ),
        "label": row[at + 2] if kind == KIND_ENUM else None,
        "status": row[at + 4],
        "severity": row[at + 5],
        "timestamp": None if ts is None else datetime.fromtimestamp(ts, UTC),
        "units": row[at + 11],
        "precision": row[at + 12],
        "upper_ctrl_limit": row[at + 13],
        "lower_ctrl_limit": row[at + 14],
        "source": SOURCE_NAMES.get(source),
        "age": row[at + 8],
        "connected": row[at + 9],
        "error": error,
    }


_SP = 4
_RB = _SP + DISPLAY_WIDTH
_TAGS = _RB + DISPLAY_WIDTH


def value_row_dto(row: tuple[Any, ...]) -> dict[str, Any]:
    """PVValueDTO of one row, its ``tags`` the pre-encoded JSON the query aggregated.

    Row-level status/severity/timestamp are the setpoint's, or the readback's when the PV
    has no setpoint side (a read-only PV), so its alarm state still shows.
    """
    sp = epics_value_dto(row, _SP)
    rb = epics_value_dto(row, _RB)
    level = sp if sp is not None else rb
    return {
        "pvId": row[0],
        "pvName": row[1],
        "setpointName": row[2],
        "readbackName": row[3],
        "setpointValue": sp,
        "readbackValue": rb,
        "status": level["status"] if level is not None else None,
        "severity": level["severity"] if level is not None else None,
        "timestamp": level["timestamp"] if level is not None else None,
        "tags": orjson.Fragment(row[_TAGS] or b"[]"),
    }


def value_row_json(row: tuple[Any, ...]) -> str:
    """One PVValueDTO as compact JSON text. orjson writes aware datetimes as ISO 8601 with
    their offset (``iso_utc``'s format) and NaN/Inf, should any be stored, as null."""
    return orjson.dumps(value_row_dto(row)).decode()


def pv_history_dto(row: tuple[Any, ...]) -> dict[str, Any]:
    """One saved value of a PV (``storage.pv_history_rows`` row) with its snapshot."""
    return {
        "snapshotId": row[0],
        "snapshotTitle": row[1],
        "snapshotDate": row[2].isoformat(),
        "pvName": row[3],
        "setpointValue": epics_value_dto(row, 4),
        "readbackValue": epics_value_dto(row, 4 + DISPLAY_WIDTH),
    }


# --- requests ----------------------------------------------------------------------------------


class SnapshotLabelsSerializer(serializers.Serializer):
    """PUT /v1/snapshots/{id}/labels body, for the schema (services.labels_clean checks it)."""

    labels = serializers.ListField(child=serializers.CharField(max_length=64))


class SnapshotListQuerySerializer(serializers.Serializer):
    """``limit`` (1..1000, default 100) and ``offset`` of GET /v1/snapshots."""

    limit = serializers.IntegerField(
        min_value=1, max_value=LIST_MAX_LIMIT, default=LIST_DEFAULT_LIMIT
    )
    offset = serializers.IntegerField(min_value=0, max_value=MAX_QUERY_INT, default=0)


class SnapshotDetailQuerySerializer(serializers.Serializer):
    """``limit`` (absent: all values) and ``offset`` applied to ``pvValues``."""

    limit = serializers.IntegerField(
        min_value=0, max_value=MAX_QUERY_INT, required=False, allow_null=True
    )
    offset = serializers.IntegerField(min_value=0, max_value=MAX_QUERY_INT, default=0)


class SnapshotUpdateSerializer(serializers.Serializer):
    """PUT body: ``title`` (1..255), ``description`` or ``comment``; null means unchanged."""

    title = serializers.CharField(
        min_length=1, max_length=255, required=False, allow_null=True, trim_whitespace=True
    )
    description = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False
    )
    comment = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False
    )

    def to_service(self) -> dict[str, Any]:
        """Keyword arguments of ``snapshot_update``: only the fields that change."""
        data = self.validated_data
        out: dict[str, Any] = {}
        if data.get("title") is not None:
            out["title"] = data["title"]
        description = data.get("description")
        if description is None:
            description = data.get("comment")
        if description is not None:
            out["description"] = description
        return out


# --- response shapes, for the OpenAPI schema only (the DTOs above are built by hand) ----------


class SelectionOutSerializer(serializers.Serializer):
    pvIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)
    tagFilters = serializers.ListField(child=serializers.ListField(child=serializers.UUIDField()))


class SnapshotSummaryOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    comment = serializers.CharField(allow_null=True)
    description = serializers.CharField(allow_null=True)
    createdDate = serializers.DateTimeField()
    createdBy = serializers.CharField(allow_null=True)
    pvCount = serializers.IntegerField()
    liveCount = serializers.IntegerField()
    staleCount = serializers.IntegerField()
    rereadCount = serializers.IntegerField()
    failedCount = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Snapshot.Kind.choices)
    labels = serializers.ListField(child=serializers.CharField(), help_text="'golden' protects")
    scheduleId = serializers.UUIDField(allow_null=True, help_text="the schedule that took it")
    selection = SelectionOutSerializer(allow_null=True, help_text="the subset; null = every PV")


class SnapshotSummaryMetaOutSerializer(SnapshotSummaryOutSerializer):
    """A list item when ``metadataPVs`` is asked for."""

    metadataPVs = serializers.DictField(
        child=serializers.JSONField(allow_null=True), help_text="address -> saved value"
    )


class EpicsValueOutSerializer(serializers.Serializer):
    value = serializers.JSONField(help_text="scalar, string, list; an enum's integer index")
    # A declared field named like a Field attribute (DRF's metaclass moves it into
    # _declared_fields; the stubs see it as overriding Field.label / Field.source).
    label = serializers.CharField(allow_null=True, help_text="an enum's string, else null")  # type: ignore[assignment]
    status = serializers.IntegerField(allow_null=True)
    severity = serializers.IntegerField(allow_null=True)
    timestamp = serializers.DateTimeField(allow_null=True)
    units = serializers.CharField(allow_null=True)
    precision = serializers.IntegerField(allow_null=True)
    upper_ctrl_limit = serializers.FloatField(allow_null=True)
    lower_ctrl_limit = serializers.FloatField(allow_null=True)
    source = serializers.ChoiceField(choices=["cache", "direct"], allow_null=True)  # type: ignore[assignment]
    age = serializers.FloatField(allow_null=True, help_text="seconds the cached value was old")
    connected = serializers.BooleanField(allow_null=True)
    error = serializers.CharField(allow_null=True)


class TagInfoOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    groupName = serializers.CharField()


class PVValueOutSerializer(serializers.Serializer):
    pvId = serializers.UUIDField(allow_null=True, help_text="null once the PV is deleted")
    pvName = serializers.CharField()
    setpointName = serializers.CharField(allow_null=True)
    readbackName = serializers.CharField(allow_null=True)
    setpointValue = EpicsValueOutSerializer(allow_null=True)
    readbackValue = EpicsValueOutSerializer(allow_null=True)
    status = serializers.IntegerField(allow_null=True)
    severity = serializers.IntegerField(allow_null=True)
    timestamp = serializers.DateTimeField(allow_null=True)
    tags = TagInfoOutSerializer(many=True)


class PVHistoryItemOutSerializer(serializers.Serializer):
    snapshotId = serializers.UUIDField()
    snapshotTitle = serializers.CharField()
    snapshotDate = serializers.DateTimeField()
    pvName = serializers.CharField()
    setpointValue = EpicsValueOutSerializer(allow_null=True)
    readbackValue = EpicsValueOutSerializer(allow_null=True)


class SnapshotOutSerializer(SnapshotSummaryOutSerializer):
    pvValues = PVValueOutSerializer(many=True)


class SnapshotCreateSerializer(serializers.Serializer):
    """POST /v1/snapshots body, for the schema only (capture_views reads it by hand)."""

    title = serializers.CharField(max_length=255, help_text="1..255 characters after trimming")
    comment = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    description = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="same as comment"
    )
    pvIds = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_null=True, help_text="a subset"
    )
    tagFilters = serializers.ListField(
        child=serializers.ListField(child=serializers.UUIDField()),
        required=False,
        allow_null=True,
        help_text="a subset: OR inside a group, AND across",
    )


class JobCreatedOutSerializer(serializers.Serializer):
    """JobCreatedDTO (contract §2.2)."""

    jobId = serializers.UUIDField()
    message = serializers.CharField()


class CompareSummaryOutSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    onlyIn1 = serializers.IntegerField()
    onlyIn2 = serializers.IntegerField()
    setpointDifferences = serializers.IntegerField()
    readbackDifferences = serializers.IntegerField()


class ComparisonOutSerializer(serializers.Serializer):
    """ComparisonResultDTO (contract §6.1) plus the summary; ``snapshot2Id`` is ``"live"``
    against the live values."""

    snapshot1Id = serializers.CharField()
    snapshot2Id = serializers.CharField()
    differences = serializers.ListField(child=serializers.DictField())
    matchCount = serializers.IntegerField()
    differenceCount = serializers.IntegerField()
    summary = CompareSummaryOutSerializer()


class SnapshotExportOutSerializer(serializers.Serializer):
    """The JSON export file (not enveloped)."""

    snapshot = SnapshotSummaryOutSerializer()
    pvValues = serializers.ListField(child=serializers.DictField())

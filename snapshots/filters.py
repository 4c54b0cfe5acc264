"""Filters of GET /v1/snapshots (contract §2.4): ``title``, repeated ``tags``, ``kind``; and
(issue 17) ``createdBy``, ``createdAfter``/``createdBefore``, repeated ``labels`` (all of
them), ``search`` (title and comment), ``containsPv`` (a PV id or name), ``scheduleId``,
``metadataFilter=ADDRESS:min:max`` (either bound may be empty)."""

from __future__ import annotations

import uuid
from typing import Any

import django_filters
from django import forms
from django_filters.widgets import QueryArrayWidget

from snapshots.models import Snapshot
from snapshots.querysets import SnapshotQuerySet


class UUIDListField(forms.Field):
    """Repeated keys (``?tags=a&tags=b``, or comma-separated) of UUIDs."""

    widget = QueryArrayWidget

    def to_python(self, value: Any) -> list[uuid.UUID]:
        if not value:
            return []
        items = [value] if isinstance(value, str) else list(value)
        out = []
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                try:
                    out.append(uuid.UUID(part.strip()))
                except ValueError:
                    raise forms.ValidationError(f"'{part.strip()}' is not a valid UUID") from None
        return out


class UUIDListFilter(django_filters.Filter):
    field_class = UUIDListField


class TextListField(forms.Field):
    """Repeated keys (``?labels=a&labels=b``, or comma-separated) of non-empty strings."""

    widget = QueryArrayWidget

    def to_python(self, value: Any) -> list[str]:
        if not value:
            return []
        items = [value] if isinstance(value, str) else list(value)
        return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


class TextListFilter(django_filters.Filter):
    field_class = TextListField


class RangeField(forms.Field):
    """``ADDRESS:min:max`` (an address may hold colons: the bounds are the last two parts)."""

    def to_python(self, value: Any) -> tuple[str, float | None, float | None] | None:
        text = str(value).strip() if value is not None else ""
        if not text:
            return None
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise forms.ValidationError("Expected ADDRESS:min:max (a bound may be empty)")
        bounds: list[float | None] = []
        for part in parts[1:]:
            try:
                bounds.append(float(part) if part.strip() else None)
            except ValueError:
                raise forms.ValidationError(f"'{part}' is not a number") from None
        return parts[0], bounds[0], bounds[1]


class RangeFilter(django_filters.Filter):
    field_class = RangeField


class SnapshotFilterSet(django_filters.FilterSet):
    """Title substring (case-insensitive); snapshots holding a PV currently tagged with any of
    ``tags``; ``kind`` (snapshot / safety / imported); and the issue-17 filters (module
    docstring)."""

    title = django_filters.CharFilter(method="filter_title")
    tags = UUIDListFilter(method="filter_tags")
    kind = django_filters.ChoiceFilter(choices=Snapshot.Kind.choices)
    createdBy = django_filters.CharFilter(field_name="created_by")
    createdAfter = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    createdBefore = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lte")
    labels = TextListFilter(method="filter_labels")
    search = django_filters.CharFilter(method="filter_search")
    containsPv = django_filters.CharFilter(method="filter_contains_pv")
    scheduleId = django_filters.UUIDFilter(field_name="schedule_id")
    metadataFilter = RangeFilter(method="filter_metadata")

    class Meta:
        model = Snapshot
        fields = ["title", "tags", "kind"]

    def filter_labels(
        self, queryset: SnapshotQuerySet, name: str, value: list[str]
    ) -> SnapshotQuerySet:
        return queryset.labelled(value)

    def filter_search(self, queryset: SnapshotQuerySet, name: str, value: str) -> SnapshotQuerySet:
        return queryset.searching(value)

    def filter_contains_pv(
        self, queryset: SnapshotQuerySet, name: str, value: str
    ) -> SnapshotQuerySet:
        return queryset.containing_pv(value.strip()) if value.strip() else queryset

    def filter_metadata(
        self, queryset: SnapshotQuerySet, name: str, value: tuple[str, float | None, float | None]
    ) -> SnapshotQuerySet:
        return queryset.metadata_between(*value) if value else queryset

    def filter_title(self, queryset: SnapshotQuerySet, name: str, value: str) -> SnapshotQuerySet:
        return queryset.titled(value)

    def filter_tags(
        self, queryset: SnapshotQuerySet, name: str, value: list[uuid.UUID]
    ) -> SnapshotQuerySet:
        return queryset.holding_tags(value)

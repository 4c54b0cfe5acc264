"""Filters of GET /v1/snapshots (contract §2.4): ``title``, repeated ``tags``, ``kind``."""

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


class SnapshotFilterSet(django_filters.FilterSet):
    """Title substring (case-insensitive); snapshots holding a PV currently tagged with any of
    ``tags``; ``kind`` (snapshot / safety)."""

    title = django_filters.CharFilter(method="filter_title")
    tags = UUIDListFilter(method="filter_tags")
    kind = django_filters.ChoiceFilter(choices=Snapshot.Kind.choices)

    class Meta:
        model = Snapshot
        fields = ["title", "tags", "kind"]

    def filter_title(self, queryset: SnapshotQuerySet, name: str, value: str) -> SnapshotQuerySet:
        return queryset.titled(value)

    def filter_tags(
        self, queryset: SnapshotQuerySet, name: str, value: list[uuid.UUID]
    ) -> SnapshotQuerySet:
        return queryset.holding_tags(value)

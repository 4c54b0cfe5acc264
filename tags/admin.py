"""Staff admin for tag groups (with their tags inline) and tags (searchable, for autocomplete)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from squirrel import audit
from squirrel.auth import staff_name
from tags.models import Tag, TagGroup


class AuditedAdmin(admin.ModelAdmin):
    """Every change made in this admin is also an audit event (Django's own log calls these
    after each save or deletion, inlines included)."""

    def _audit(self, request: HttpRequest, verb: str, obj: Any, message: Any) -> None:
        name = obj._meta.model_name
        audit.record(
            staff_name(request.user),
            f"{name}.{verb}",
            obj,
            summary=str(obj),
            detail={"admin": str(message)} if message else {},
        )

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit(request, "create", obj, message)
        return super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        self._audit(request, "update", obj, message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        for obj in queryset:
            self._audit(request, "delete", obj, "")
        return super().log_deletions(request, queryset)


class TagInline(admin.TabularInline):
    model = Tag
    fields = ("name", "description")
    extra = 1
    ordering = ("name",)


@admin.register(TagGroup)
class TagGroupAdmin(AuditedAdmin):
    """Groups with their tags edited inline."""

    list_display = ("name", "description", "tag_count", "updated_at")
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")
    inlines = (TagInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[TagGroup]:
        return super().get_queryset(request).annotate(_tag_count=Count("tags"))

    @admin.display(description="tags", ordering="_tag_count")
    def tag_count(self, group: Any) -> int:
        return group._tag_count


@admin.register(Tag)
class TagAdmin(AuditedAdmin):
    """Tags; ``search_fields`` serve the PV page's tag autocomplete."""

    list_display = ("name", "group", "description", "pv_count")
    list_filter = ("group",)
    list_select_related = ("group",)
    search_fields = ("name", "group__name")
    autocomplete_fields = ("group",)
    ordering = ("group__name", "name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tag]:
        return super().get_queryset(request).annotate(_pv_count=Count("pvs"))

    @admin.display(description="PVs", ordering="_pv_count")
    def pv_count(self, tag: Any) -> int:
        return tag._pv_count

"""Staff admin for the PV catalog, usable at 50K rows: searchable, filterable by tag group
and tag, tags edited with autocomplete, bulk actions that call services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest

from pvs import services
from pvs.models import PV
from pvs.querysets import PVQuerySet
from tags.models import Tag, TagGroup


class TagGroupFilter(admin.SimpleListFilter):
    """PVs carrying any tag of one group."""

    title = "tag group"
    parameter_name = "tag_group"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in TagGroup.objects.values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[PV]) -> QuerySet[PV]:
        group = self.value()
        if not group:
            return queryset
        assert isinstance(queryset, PVQuerySet)  # the changelist starts from PV.objects
        tag_ids = Tag.objects.filter(group__id=group).values_list("pk", flat=True)
        return queryset.with_any_tag(list(tag_ids))


class TagFilter(admin.SimpleListFilter):
    """PVs carrying one tag (narrowed to the chosen group, when one is chosen)."""

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags = Tag.objects.select_related("group").order_by("group__name", "name")
        group = request.GET.get(TagGroupFilter.parameter_name)
        if group:
            tags = tags.filter(group__id=group)
        return [(str(t.pk), f"{t.group.name}: {t.name}") for t in tags]

    def queryset(self, request: HttpRequest, queryset: QuerySet[PV]) -> QuerySet[PV]:
        tag = self.value()
        if not tag:
            return queryset
        assert isinstance(queryset, PVQuerySet)  # the changelist starts from PV.objects
        return queryset.with_any_tag([tag])


class PVActionForm(ActionForm):
    """The action bar with a tag to add or remove."""

    tag = forms.ModelChoiceField(
        queryset=Tag.objects.select_related("group").order_by("group__name", "name"),
        required=False,
        help_text="for the add/remove tag actions",
    )


@admin.register(PV)
class PVAdmin(admin.ModelAdmin):
    """The catalog: 100 rows a page, no full count, tags prefetched in one query."""

    list_display = (
        "setpoint_address",
        "readback_address",
        "device",
        "description",
        "abs_tolerance",
        "rel_tolerance",
        "read_only_shown",
        "tag_list",
    )
    list_filter = ("read_only", TagGroupFilter, TagFilter)
    search_fields = (
        "setpoint_address",
        "readback_address",
        "config_address",
        "device",
        "description",
    )
    search_help_text = "address, device or description contains"
    autocomplete_fields = ("tags",)
    readonly_fields = ("id", "created_at", "updated_at")
    fields = (
        "id",
        ("setpoint_address", "readback_address", "config_address"),
        "device",
        "description",
        ("abs_tolerance", "rel_tolerance", "read_only"),
        "tags",
        ("created_at", "updated_at"),
    )
    list_per_page = 100
    show_full_result_count = False
    ordering = ("setpoint_address",)
    action_form = PVActionForm
    actions = ("mark_read_only", "mark_writable", "add_tag", "remove_tag")

    def get_queryset(self, request: HttpRequest) -> QuerySet[PV]:
        tags = Prefetch("tags", queryset=Tag.objects.select_related("group").order_by("name"))
        return super().get_queryset(request).prefetch_related(tags)

    @admin.display(description="read-only", boolean=True, ordering="read_only")
    def read_only_shown(self, pv: PV) -> bool:
        """Marked read-only, or read-back-only (no setpoint: never written by a restore)."""
        return pv.is_read_only

    @admin.display(description="tags")
    def tag_list(self, pv: PV) -> str:
        return ", ".join(f"{t.group.name}: {t.name}" for t in pv.tags.all())

    def save_model(self, request: HttpRequest, obj: PV, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.catalog_changed()

    def delete_model(self, request: HttpRequest, obj: PV) -> None:
        super().delete_model(request, obj)
        services.catalog_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        super().delete_queryset(request, queryset)
        services.catalog_changed()

    def _ids(self, queryset: QuerySet[PV]) -> list[Any]:
        return list(queryset.values_list("pk", flat=True))

    @admin.action(description="Mark selected PVs read-only")
    def mark_read_only(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        count = services.pv_set_read_only(pv_ids=self._ids(queryset), read_only=True)
        self.message_user(request, f"{count} PVs marked read-only.")

    @admin.action(description="Mark selected PVs writable")
    def mark_writable(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        count = services.pv_set_read_only(pv_ids=self._ids(queryset), read_only=False)
        self.message_user(request, f"{count} PVs marked writable.")

    def _chosen_tag(self, request: HttpRequest) -> Tag | None:
        try:
            tag = PVActionForm.base_fields["tag"].clean(request.POST.get("tag") or None)
        except ValidationError:
            tag = None
        if tag is None:
            self.message_user(request, "Choose a tag next to the action.", messages.WARNING)
        return tag

    @admin.action(description="Add the chosen tag to selected PVs")
    def add_tag(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        tag = self._chosen_tag(request)
        if tag is not None:
            count = services.pv_tag_add(pv_ids=self._ids(queryset), tag=tag)
            self.message_user(request, f"Tag {tag} added to {count} PVs.")

    @admin.action(description="Remove the chosen tag from selected PVs")
    def remove_tag(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        tag = self._chosen_tag(request)
        if tag is not None:
            count = services.pv_tag_remove(pv_ids=self._ids(queryset), tag=tag)
            self.message_user(request, f"Tag {tag} removed from {count} PVs.")

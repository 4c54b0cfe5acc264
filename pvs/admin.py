"""Staff admin for the PV catalog, usable at 50K rows: searchable, filterable by tag group
and tag, tags edited with autocomplete, bulk actions that call services."""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest

from pvs import services
from pvs.models import PV
from pvs.querysets import PVQuerySet
from squirrel import audit
from squirrel.auth import staff_name
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
    stage = forms.IntegerField(
        min_value=0, max_value=32767, required=False, help_text="for the set restore stage action"
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
        "restore_stage",
        "completion_timeout",
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
        ("restore_stage", "completion_timeout"),
        "tags",
        ("created_at", "updated_at"),
    )
    list_per_page = 100
    show_full_result_count = False
    # a changed PV's fields before the form saved them, until its tags are saved too
    _old: WeakKeyDictionary[HttpRequest, tuple[PV, dict[str, Any] | None]] = WeakKeyDictionary()
    ordering = ("setpoint_address",)
    action_form = PVActionForm
    actions = ("mark_read_only", "mark_writable", "add_tag", "remove_tag", "set_stage")

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
        old = services.pv_fields(PV.objects.get(pk=obj.pk)) if change else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
        self._old[request] = (obj, old)
        services.catalog_changed()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """The audit record once the tags are saved too (the admin saves them after the row)."""
        super().save_related(request, form, formsets, change)
        obj, old = self._old.pop(request, (form.instance, None))
        actor = staff_name(request.user)
        if old is None:
            audit.record(actor, "pv.create", obj, summary=obj.name, after=services.pv_fields(obj))
        else:
            before, after = audit.changes(old, services.pv_fields(obj))
            audit.record(actor, "pv.update", obj, summary=obj.name, before=before, after=after)

    def delete_model(self, request: HttpRequest, obj: PV) -> None:
        services.pv_delete(pv_id=obj.pk, actor=staff_name(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        for pk in self._ids(queryset):
            services.pv_delete(pv_id=pk, actor=staff_name(request.user))

    def _ids(self, queryset: QuerySet[PV]) -> list[Any]:
        return list(queryset.values_list("pk", flat=True))

    @admin.action(description="Mark selected PVs read-only")
    def mark_read_only(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        count = services.pv_set_read_only(
            pv_ids=self._ids(queryset), read_only=True, actor=staff_name(request.user)
        )
        self.message_user(request, f"{count} PVs marked read-only.")

    @admin.action(description="Mark selected PVs writable")
    def mark_writable(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        count = services.pv_set_read_only(
            pv_ids=self._ids(queryset), read_only=False, actor=staff_name(request.user)
        )
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
            count = services.pv_tag_add(
                pv_ids=self._ids(queryset), tag=tag, actor=staff_name(request.user)
            )
            self.message_user(request, f"Tag {tag} added to {count} PVs.")

    @admin.action(description="Set the chosen restore stage of selected PVs")
    def set_stage(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        try:
            stage = PVActionForm.base_fields["stage"].clean(request.POST.get("stage") or None)
        except ValidationError:
            stage = None
        if stage is None:
            self.message_user(request, "Give a stage next to the action.", messages.WARNING)
            return
        count = services.pv_stage_set(
            pv_ids=self._ids(queryset), restore_stage=stage, actor=staff_name(request.user)
        )
        self.message_user(request, f"{count} PVs now restore in stage {stage}.")

    @admin.action(description="Remove the chosen tag from selected PVs")
    def remove_tag(self, request: HttpRequest, queryset: QuerySet[PV]) -> None:
        tag = self._chosen_tag(request)
        if tag is not None:
            count = services.pv_tag_remove(
                pv_ids=self._ids(queryset), tag=tag, actor=staff_name(request.user)
            )
            self.message_user(request, f"Tag {tag} removed from {count} PVs.")

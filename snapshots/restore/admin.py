"""Admin of restores: the audit records (read-only), their plans and per-PV outcomes.

Imported from snapshots/admin.py (the module Django's admin autodiscovers). Outcome and
plan-item rows (up to 50K per restore) are not inlined: the change page links to the filtered
changelists instead.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from snapshots.models import Restore, RestoreOutcome, RestorePlan, RestorePlanItem


class _ReadOnly(admin.ModelAdmin):
    """Audit data is written by the restore services only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Restore)
class RestoreAdmin(_ReadOnly):
    list_display = (
        "created_at",
        "kind",
        "status",
        "snapshot_title",
        "created_by",
        "total",
        "success_count",
        "failure_count",
        "stop_on_failure",
    )
    list_filter = ("status", "kind", "stop_on_failure")
    search_fields = ("snapshot_title", "created_by", "=id")
    date_hierarchy = "created_at"
    list_select_related = ()
    readonly_fields = ("outcomes_link",)
    exclude = ("pv_ids",)

    @admin.display(description="per-PV outcomes")
    def outcomes_link(self, obj: Restore) -> str:
        url = reverse("admin:snapshots_restoreoutcome_changelist") + f"?restore__id__exact={obj.pk}"
        return format_html('<a href="{}">{} failed, {} verified</a>', url,
                           obj.failure_count, obj.success_count)  # fmt: skip


@admin.register(RestoreOutcome)
class RestoreOutcomeAdmin(_ReadOnly):
    list_display = (
        "pv_name",
        "stage",
        "outcome",
        "error",
        "written",
        "setpoint_read",
        "readback_read",
    )
    list_filter = ("outcome", "stage")
    search_fields = ("pv_name",)
    raw_id_fields = ("restore",)
    show_full_result_count = False


@admin.register(RestorePlan)
class RestorePlanAdmin(_ReadOnly):
    list_display = (
        "created_at",
        "snapshot",
        "created_by",
        "total",
        "counts",
        "needs_approval",
        "approved_by",
        "approved_at",
    )
    list_filter = ("needs_approval",)
    list_select_related = ("snapshot",)
    raw_id_fields = ("snapshot",)
    exclude = ("pv_ids",)


@admin.register(RestorePlanItem)
class RestorePlanItemAdmin(_ReadOnly):
    list_display = ("pv_name", "stage", "action", "saved", "live", "delta", "note")
    list_filter = ("action", "stage")
    search_fields = ("pv_name",)
    raw_id_fields = ("plan",)
    show_full_result_count = False

"""Admin of jobs: read-only records with their progress (written by the job services only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from jobs.models import Job
from jobs.services import job_reap_all


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("created_at", "type", "status", "progress_bar", "message", "result_id")
    list_filter = ("type", "status")
    search_fields = ("=id", "result_id", "message", "error")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "type",
        "status",
        "progress_bar",
        "message",
        "result_id",
        "error",
        "job_data",
        "attempts",
        "created_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "completed_at",
    )
    fields = readonly_fields

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        """The list shows a job whose worker died as failed, as a poll of it would."""
        job_reap_all()
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, obj: Job) -> SafeString:
        return format_html(
            '<progress max="100" value="{}" title="{}%"></progress> {}%',
            obj.progress,
            obj.progress,
            obj.progress,
        )

"""Admin of snapshots: read-only values, shown a page at a time on the snapshot's page.

A snapshot holds ~50K values, so they are never inlined: the change page renders one page
(``?vpage=N``, ``VALUES_PER_PAGE`` rows, optional ``?vq=`` name filter) through the same
streaming query as the API. ``SnapshotValue`` has no changelist of its own (a COUNT over
every snapshot's values would make it slow); the restore audit admin is in restore/admin.py.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from snapshots import services
from snapshots.models import Snapshot, SnapshotValue
from snapshots.restore import admin as restore_admin  # noqa: F401  (registers the audit models)
from snapshots.serializers import value_row_dto
from snapshots.storage import snapshot_value_rows

VALUES_PER_PAGE = 100


def _value_text(side: dict[str, Any] | None) -> str:
    if side is None:
        return "—"
    value = side["label"] if side["label"] is not None else side["value"]
    text = "null" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _alarm_text(side: dict[str, Any] | None) -> str:
    if side is None or side["severity"] is None:
        return ""
    return f"{side['status']}/{side['severity']}"


def _page_link(query: dict[str, str], page: int, label: str) -> SafeString:
    return format_html('<a href="?{}">{}</a>', urlencode({**query, "vpage": page}), label)


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = (
        "title",
        "kind",
        "created_at",
        "created_by",
        "pv_count",
        "completeness",
    )
    list_filter = ("kind",)
    search_fields = ("title", "description", "=id")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "title",
        "description",
        "kind",
        "created_by",
        "created_at",
        "updated_at",
        "pv_count",
        "completeness",
        "values_table",
    )
    readonly_fields = (
        "kind",
        "created_by",
        "created_at",
        "updated_at",
        "pv_count",
        "completeness",
        "values_table",
    )
    actions = ["delete_with_values"]
    change_list_template = "admin/snapshots/snapshot/change_list.html"

    def get_urls(self) -> list[Any]:
        take = self.admin_site.admin_view(self.take_snapshot_view)
        return [path("take/", take, name="snapshots_snapshot_take"), *super().get_urls()]

    def take_snapshot_view(self, request: HttpRequest) -> Any:
        """Capture a snapshot of the whole catalog as a job; then show the job's progress."""
        if not request.user.has_perm("snapshots.view_snapshot"):
            raise PermissionDenied
        if request.method == "POST":
            title = (request.POST.get("title") or "").strip()[:255]
            if title:
                job = services.snapshot_create_enqueue(
                    title=title,
                    description=request.POST.get("comment") or None,
                    use_cache=True,
                    created_by=f"user:{request.user.get_username()}",
                )
                messages.success(request, f"Snapshot '{title}' queued; the job shows its progress.")
                return redirect(reverse("admin:jobs_job_change", args=[job.pk]))
            messages.error(request, "A title is required.")
        context = {**self.admin_site.each_context(request), "title": "Take a snapshot",
                   "opts": self.model._meta}  # fmt: skip
        return render(request, "admin/snapshots/snapshot/take.html", context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # snapshots are captured, never typed in

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Django's delete confirmation would list all 50K values; the action deletes instead.
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if not request.user.has_perm("snapshots.delete_snapshot"):
            actions.pop("delete_with_values", None)
        return actions

    @admin.action(description="Delete selected snapshots and their values")
    def delete_with_values(self, request: HttpRequest, queryset: QuerySet[Snapshot]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        for snapshot_id in ids:
            services.snapshot_delete(snapshot_id=str(snapshot_id))
        self.message_user(request, f"Deleted {len(ids)} snapshot(s).", messages.SUCCESS)

    def save_model(self, request: HttpRequest, obj: Snapshot, form: Any, change: bool) -> None:
        services.snapshot_update(
            snapshot_id=str(obj.pk), title=obj.title, description=obj.description or ""
        )

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._values_query = request.GET.copy()  # read by values_table (per request)
        return obj

    @admin.display(description="live / stale / re-read / failed")
    def completeness(self, obj: Snapshot) -> str:
        return f"{obj.live_count} / {obj.stale_count} / {obj.reread_count} / {obj.failed_count}"

    @admin.display(description="values")
    def values_table(self, obj: Snapshot) -> SafeString:
        query = getattr(obj, "_values_query", {})
        search = (query.get("vq") or "").strip()
        total = (
            SnapshotValue.objects.filter(snapshot=obj, pv_name__icontains=search).count()
            if search
            else obj.pv_count
        )
        pages = max(1, math.ceil(total / VALUES_PER_PAGE))
        try:
            page = min(max(1, int(query.get("vpage") or 1)), pages)
        except ValueError:
            page = 1
        rows = [
            value_row_dto(row)
            for row in snapshot_value_rows(
                snapshot_id=obj.pk,
                limit=VALUES_PER_PAGE,
                offset=(page - 1) * VALUES_PER_PAGE,
                name_contains=search or None,
            )
        ]
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td><td>{}</td></tr>",
            (
                (
                    r["pvName"],
                    "" if r["pvId"] else "(PV deleted)",
                    _value_text(r["setpointValue"]),
                    _alarm_text(r["setpointValue"]),
                    _value_text(r["readbackValue"]),
                    _alarm_text(r["readbackValue"]),
                    r["timestamp"].isoformat(sep=" ", timespec="seconds") if r["timestamp"] else "",
                    " ".join(
                        filter(
                            None,
                            [
                                (r["setpointValue"] or {}).get("source"),
                                (r["setpointValue"] or {}).get("error"),
                                (r["readbackValue"] or {}).get("error"),
                            ],
                        )
                    ),
                )
                for r in rows
            ),
        )
        keep = {"vq": search} if search else {}
        nav = format_html(
            "{} page {} of {} ({} values) {}",
            _page_link(keep, page - 1, "‹ previous") if page > 1 else "",
            page,
            pages,
            total,
            _page_link(keep, page + 1, "next ›") if page < pages else "",
        )
        return format_html(
            '<div class="snapshot-values"><p>{}</p>'
            '<p><input type="search" name="vq" value="{}" placeholder="PV name contains" '
            'form="vq-form" onkeydown="if(event.key===\'Enter\'){{event.preventDefault();'
            "location.search='?vq='+encodeURIComponent(this.value);}}\"></p>"
            "<table><thead><tr><th>PV</th><th></th><th>setpoint</th><th>st/sev</th>"
            "<th>readback</th><th>st/sev</th><th>timestamp (UTC)</th><th>source / error</th>"
            "</tr></thead><tbody>{}</tbody></table><p>{}</p></div>",
            nav,
            search,
            body,
            nav,
        )

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

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from snapshots import schedules, services
from snapshots.models import MetaPV, Snapshot, SnapshotSchedule, SnapshotValue
from snapshots.restore import admin as restore_admin  # noqa: F401  (registers the audit models)
from snapshots.serializers import value_row_dto
from snapshots.storage import snapshot_value_rows
from squirrel.auth import staff_name
from squirrel.exceptions import Invalid

VALUES_PER_PAGE = 100


def _actor(request: HttpRequest) -> str:
    """The audit name of a staff user in the admin (``squirrel.auth.staff_name``, as the API
    names a session user)."""
    return staff_name(request.user)


def _label_list(text: str) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


class LabelsForm(forms.Form):
    """The bulk labelling page: comma-separated labels to add and to remove."""

    add = forms.CharField(required=False, help_text="comma-separated; 'golden' protects")
    remove = forms.CharField(required=False, help_text="comma-separated")

    def clean_add(self) -> list[str]:
        return _label_list(self.cleaned_data.get("add", ""))

    def clean_remove(self) -> list[str]:
        return _label_list(self.cleaned_data.get("remove", ""))


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
        "label_list",
        "schedule",
    )
    list_filter = ("kind", "schedule")
    list_select_related = ("schedule",)
    search_fields = ("title", "description", "=id", "=labels")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    fields = (
        "title",
        "description",
        "labels",
        "kind",
        "schedule",
        "selection",
        "metadata",
        "created_by",
        "created_at",
        "updated_at",
        "pv_count",
        "completeness",
        "values_table",
    )
    readonly_fields = (
        "kind",
        "schedule",
        "selection",
        "metadata",
        "created_by",
        "created_at",
        "updated_at",
        "pv_count",
        "completeness",
        "values_table",
    )
    actions = ["delete_with_values", "label_selected"]
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
        done = services.snapshots_delete(snapshot_ids=ids, actor=_actor(request))
        for _, reason in done.protected:
            self.message_user(request, f"Not deleted: {reason}", messages.ERROR)
        if done.deleted:
            self.message_user(
                request, f"Deleted {len(done.deleted)} snapshot(s).", messages.SUCCESS
            )

    @admin.action(description="Add or remove labels of selected snapshots")
    def label_selected(self, request: HttpRequest, queryset: QuerySet[Snapshot]) -> Any:
        """Bulk labelling: an intermediate page asks which labels to add and remove."""
        form = LabelsForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                changed = services.snapshots_label(
                    snapshot_ids=list(queryset.values_list("pk", flat=True)),
                    add=form.cleaned_data["add"],
                    remove=form.cleaned_data["remove"],
                    actor=_actor(request),
                )
            except Invalid as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return None
            self.message_user(request, f"Labels changed on {changed} snapshot(s).")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Label snapshots",
            "opts": self.model._meta,
            "form": form,
            "snapshots": queryset,
            "action": "label_selected",
        }
        return render(request, "admin/snapshots/snapshot/label.html", context)

    @admin.display(description="labels")
    def label_list(self, obj: Snapshot) -> str:
        return ", ".join(obj.labels)

    def save_model(self, request: HttpRequest, obj: Snapshot, form: Any, change: bool) -> None:
        services.snapshot_update(
            snapshot_id=str(obj.pk), title=obj.title, description=obj.description or ""
        )
        if "labels" in form.changed_data:
            services.snapshot_labels_set(
                snapshot_id=str(obj.pk), labels=obj.labels, actor=_actor(request)
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


SCHEDULE_FIELDS = ("name", "enabled", "interval_seconds", "crontab", "title_template",
                   "tag_filters", "keep_last", "keep_days")  # fmt: skip


class SnapshotScheduleForm(forms.ModelForm):
    class Meta:
        model = SnapshotSchedule
        fields = SCHEDULE_FIELDS

    def clean(self) -> dict[str, Any]:
        """The service's rules (one home: ``schedules.schedule_clean``) as form errors."""
        data = super().clean() or {}
        fields: dict[str, Any] = {f: data.get(f) for f in SCHEDULE_FIELDS}
        fields["crontab"] = fields["crontab"] or None
        fields["title_template"] = fields["title_template"] or ""
        fields["enabled"] = bool(fields["enabled"])
        try:
            schedules.schedule_clean(schedules.ScheduleData(**fields))
        except Invalid as exc:
            raise forms.ValidationError(exc.message) from None
        return data


@admin.register(SnapshotSchedule)
class SnapshotScheduleAdmin(admin.ModelAdmin):
    """Schedules, edited through the same services as the API (the beat entry follows)."""

    form = SnapshotScheduleForm
    list_display = ("name", "enabled", "interval_seconds", "crontab", "keep_last", "keep_days",
                    "last_run_at")  # fmt: skip
    list_filter = ("enabled",)
    search_fields = ("name",)
    readonly_fields = ("created_by", "last_run_at", "created_at", "updated_at")

    def save_model(
        self, request: HttpRequest, obj: SnapshotSchedule, form: Any, change: bool
    ) -> None:
        data = schedules.ScheduleData.of(obj)
        actor = _actor(request)
        if change:
            saved = schedules.schedule_update(schedule_id=str(obj.pk), data=data, actor=actor)
        else:
            saved = schedules.schedule_create(data=data, actor=actor, created_by=actor)
        obj.pk = saved.pk

    def delete_model(self, request: HttpRequest, obj: SnapshotSchedule) -> None:
        schedules.schedule_delete(schedule_id=str(obj.pk), actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SnapshotSchedule]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(MetaPV)
class MetaPVAdmin(admin.ModelAdmin):
    """Context PVs stored with every snapshot, besides SQUIRREL_SNAPSHOT_META_PVS."""

    list_display = ("address", "description")
    search_fields = ("address", "description")

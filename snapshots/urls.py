"""Routes of the snapshots app under /v1 (no trailing slashes, contract §1.2).

``snapshots`` dispatches GET to the list and POST to the capture view (h5). Static sub-paths
of ``snapshots/<id>`` (restore, compare, export) go before the detail route; add them at the
marked spot.
"""

from django.urls import path

from snapshots import schedule_views, views
from snapshots.capture_views import (
    SnapshotCompareLiveView,
    SnapshotCompareView,
    SnapshotExportView,
    SnapshotImportView,
)
from snapshots.restore import views as restore_views

app_name = "snapshots"

urlpatterns = [
    path("snapshots", views.SnapshotListView.as_view(), name="list"),
    path("snapshots/import", SnapshotImportView.as_view(), name="import"),
    path(
        "snapshots/<str:snapshot_id>/compare/live",
        SnapshotCompareLiveView.as_view(),
        name="compare-live",
    ),
    path(
        "snapshots/<str:snapshot_id>/compare/<str:other_id>",
        SnapshotCompareView.as_view(),
        name="compare",
    ),
    path(
        "snapshots/<str:snapshot_id>/live-rows",
        views.SnapshotLiveRowsView.as_view(),
        name="live-rows",
    ),
    path("snapshots/<str:snapshot_id>/export", SnapshotExportView.as_view(), name="export"),
    path("snapshots/<str:snapshot_id>/labels", views.SnapshotLabelsView.as_view(), name="labels"),
    path("pvs/<str:pv_id>/history", views.PVHistoryView.as_view(), name="pv-history"),
    path(
        "snapshots/<str:snapshot_id>/restore",
        restore_views.SnapshotRestoreView.as_view(),
        name="restore",
    ),
    path(
        "snapshots/<str:snapshot_id>/restore-plan",
        restore_views.SnapshotRestorePlanView.as_view(),
        name="restore-plan",
    ),
    path(
        "restore-plans/<str:plan_id>",
        restore_views.RestorePlanDetailView.as_view(),
        name="restore-plan-detail",
    ),
    path(
        "restore-plans/<str:plan_id>/execute",
        restore_views.RestorePlanExecuteView.as_view(),
        name="restore-plan-execute",
    ),
    path(
        "restore-plans/<str:plan_id>/approve",
        restore_views.RestorePlanApproveView.as_view(),
        name="restore-plan-approve",
    ),
    path("restores", restore_views.RestoreListView.as_view(), name="restore-list"),
    path(
        "restores/<str:restore_id>",
        restore_views.RestoreDetailView.as_view(),
        name="restore-detail",
    ),
    path(
        "restores/<str:restore_id>/revert",
        restore_views.RestoreRevertView.as_view(),
        name="restore-revert",
    ),
    path("snapshots/<str:snapshot_id>", views.SnapshotDetailView.as_view(), name="detail"),
    path("snapshot-schedules", schedule_views.ScheduleListView.as_view(), name="schedule-list"),
    path(
        "snapshot-schedules/<str:schedule_id>",
        schedule_views.ScheduleDetailView.as_view(),
        name="schedule-detail",
    ),
    path(
        "snapshot-schedules/<str:schedule_id>/retention-preview",
        schedule_views.RetentionPreviewView.as_view(),
        name="schedule-retention-preview",
    ),
]

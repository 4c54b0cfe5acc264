"""Live-value and health routes under /v1 (no trailing slashes, contract §1.2).

Included before pvs.urls so that /v1/pvs/live* wins over /v1/pvs/<pv_id>.
"""

from django.urls import path

from live import views

app_name = "live"

urlpatterns = [
    path("pvs/live", views.LiveView.as_view(), name="live"),
    path("pvs/live/all", views.LiveAllView.as_view(), name="live-all"),
    path("pvs/cache/status", views.CacheStatusView.as_view(), name="cache-status"),
    path("pvs/test-epics", views.TestEpicsView.as_view(), name="test-epics"),
    path("ws/status", views.WebSocketStatusView.as_view(), name="ws-status"),
    path("health/heartbeat", views.HeartbeatView.as_view(), name="heartbeat"),
    path("health/monitor", views.MonitorHealthView.as_view(), name="health-monitor"),
    path("health/monitor/status", views.MonitorStatusView.as_view(), name="monitor-status"),
    path("health/summary", views.SummaryView.as_view(), name="summary"),
    path("health/disconnected", views.DisconnectedView.as_view(), name="disconnected"),
    path("health/stale", views.StaleView.as_view(), name="stale"),
    path("health/watchdog", views.WatchdogView.as_view(), name="watchdog"),
    path("health/watchdog/check", views.WatchdogCheckView.as_view(), name="watchdog-check"),
    path("health/circuits", views.CircuitsView.as_view(), name="circuits"),
    path(
        "health/circuits/<str:name>/open",
        views.CircuitForceView.as_view(state="open"),
        name="circuit-open",
    ),
    path(
        "health/circuits/<str:name>/close",
        views.CircuitForceView.as_view(state="closed"),
        name="circuit-close",
    ),
]

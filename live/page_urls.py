"""Live-value pages served by Django (outside /v1)."""

from django.urls import path

from live import pages

app_name = "pages"

urlpatterns = [
    path("live/pvs", pages.pv_browser, name="pv-browser"),
    path("live/snapshots/<str:snapshot_id>", pages.snapshot_live, name="snapshot-live"),
]

"""Live-value pages: server-rendered shells whose small script reads the API and the socket."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _allowed(request: HttpRequest) -> bool:
    return settings.ANONYMOUS_ACCESS != "none" or (
        request.user.is_authenticated and request.user.is_staff
    )


def _page(request: HttpRequest, template: str, **context: object) -> HttpResponse:
    if not _allowed(request):
        return redirect_to_login(request.get_full_path(), "/admin/login/")
    return render(request, template, {"batch_ms": settings.WEBSOCKET_BATCH_INTERVAL_MS, **context})


def pv_browser(request: HttpRequest) -> HttpResponse:
    """Search and page the catalog; live value, severity, units and age update in place."""
    return _page(request, "live/pv_browser.html")


def snapshot_live(request: HttpRequest, snapshot_id: str) -> HttpResponse:
    """Saved vs live values of one snapshot, out-of-tolerance rows highlighted."""
    return _page(request, "live/snapshot_live.html", snapshot_id=snapshot_id)

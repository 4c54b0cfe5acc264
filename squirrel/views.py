"""Routes outside /v1 (contract §2.1): ``GET /``, ``GET /health``, and JSON 404/500 pages."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from squirrel.api import envelope_enabled, wrap_error

VERSION = "0.2.0"


def root(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "message": "Squirrel Backend API",
            "docs": "/docs",
            "health": "/v1/health/summary",
            "version": VERSION,
            "livePages": "/live/pvs",
            "admin": "/admin/",
        }
    )


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "healthy"})


def _error(request: HttpRequest, status: int, message: str) -> JsonResponse:
    body: dict[str, Any] = {"detail": message}
    if request.path.startswith("/v1/") and envelope_enabled():
        body = wrap_error(status, body)
    return JsonResponse(body, status=status)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _error(request, 404, f"No route for {request.method} {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    return _error(request, 500, "Internal server error")

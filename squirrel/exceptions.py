"""Domain errors and the single DRF exception handler that maps them to the contract's statuses.

Services raise these; views never build error responses themselves. Every error body is
``{"detail": <message>}`` here; the renderer (squirrel.api) wraps it in the envelope.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError
from django.http import Http404
from rest_framework import exceptions as drf
from rest_framework.response import Response

log = logging.getLogger(__name__)

# The 413 of a body over SQUIRREL_MAX_BODY_MB, here and at the edge (squirrel.limits).
BODY_TOO_LARGE = "Request body too large (limit: SQUIRREL_MAX_BODY_MB)"


class SquirrelError(Exception):
    """Base of every domain error; ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SquirrelError):
    status = 404


class Conflict(SquirrelError):
    status = 409


class NotPermitted(SquirrelError):
    """The caller may not do this (a scope or a tag it lacks): 401, as the contract answers a
    missing scope (§1.6)."""

    status = 401


class BadRequest(SquirrelError):
    status = 400


class Invalid(SquirrelError):
    """Request validation failed (contract: 422)."""

    status = 422

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class PayloadTooLarge(SquirrelError):
    """The body is over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (SQUIRREL_MAX_BODY_MB)."""

    status = 413


class Unavailable(SquirrelError):
    status = 503


def flatten_errors(
    detail: Any, loc: tuple[str, ...] = (), *, where: str = "body"
) -> list[dict[str, Any]]:
    """DRF's nested ValidationError detail as a flat FastAPI-like list of {loc, msg, type},
    each ``loc`` starting with ``where`` (body or query)."""
    if isinstance(detail, dict):
        out: list[dict[str, Any]] = []
        for key, value in detail.items():
            out.extend(flatten_errors(value, (*loc, str(key)), where=where))
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            sub = (*loc, str(index)) if isinstance(value, dict | list) else loc
            out.extend(flatten_errors(value, sub, where=where))
        return out
    code = getattr(detail, "code", "invalid")
    return [{"loc": [where, *loc], "msg": str(detail), "type": code}]


def validation_message(errors: list[dict[str, Any]]) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors]
    return "Validation error: " + "; ".join(parts)


def error_response(status: int, message: str, **extra: Any) -> Response:
    return Response({"detail": message, **extra}, status=status)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map every exception a view can raise to a clear 4xx/5xx in one shape."""
    if isinstance(exc, Invalid):
        return error_response(422, exc.message, errors=exc.errors)
    if isinstance(exc, SquirrelError):
        return error_response(exc.status, exc.message)
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, BODY_TOO_LARGE)
    if isinstance(exc, drf.ValidationError):
        errors = flatten_errors(exc.detail)
        return error_response(422, validation_message(errors), errors=errors)
    if isinstance(exc, drf.ParseError):
        return error_response(422, f"Malformed request body: {exc.detail}")
    if isinstance(exc, drf.UnsupportedMediaType):
        return error_response(415, str(exc.detail))
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed | drf.PermissionDenied):
        # Contract §1.6: a missing key and a key without the scope are both 401.
        return error_response(401, str(exc.detail))
    if isinstance(exc, Http404 | drf.NotFound):
        return error_response(404, str(exc) or "Not found")
    if isinstance(exc, drf.APIException):
        return error_response(exc.status_code, str(exc.detail))
    if isinstance(exc, DjangoValidationError):
        errors = (
            [
                {"loc": ["body", field], "msg": msg, "type": "invalid"}
                for field, msgs in exc.message_dict.items()
                for msg in msgs
            ]
            if hasattr(exc, "error_dict")
            else [{"loc": ["body"], "msg": m, "type": "invalid"} for m in exc.messages]
        )
        return error_response(422, validation_message(errors), errors=errors)
    if isinstance(exc, DataError):  # bad input that reached the database (NUL, out of range)
        return error_response(422, f"Invalid value: {exc}".splitlines()[0])
    if isinstance(exc, IntegrityError):
        return error_response(409, f"Constraint violated: {exc}".splitlines()[0])
    # InterfaceError ("connection already closed") is not a DatabaseError in Django's tree.
    if isinstance(exc, DatabaseError | InterfaceError):
        log.exception("database error")
        return error_response(503, "Database unavailable, try again")
    log.exception("unhandled error in %s", context.get("view"))
    message = f"{type(exc).__name__}: {exc}" if settings.DEBUG else "Internal server error"
    return error_response(500, message)

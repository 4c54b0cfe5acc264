"""The API envelope (contract §1.5, decision 2), shared by every /v1 view, and its schema.

One renderer wraps success bodies as ``{"errorCode":0,"errorMessage":null,"payload":...}``
and errors as ``{"errorCode":<status>,"errorMessage":msg,"payload":null,"detail":msg}``.
Views that the contract leaves bare set ``envelope = False``; ``SQUIRREL_API_ENVELOPE=false``
turns the envelope off everywhere (HEAD-style bodies).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.renderers import JSONRenderer

# The largest ``limit``/``offset`` a query parameter may carry: far past any list, and within
# PostgreSQL's bigint LIMIT/OFFSET (a larger one is a 422, not a database error).
MAX_QUERY_INT = 2**31 - 1


def envelope_enabled(view: Any = None) -> bool:
    return settings.API_ENVELOPE and getattr(view, "envelope", True)


def wrap_success(payload: Any) -> dict[str, Any]:
    return {"errorCode": 0, "errorMessage": None, "payload": payload}


def wrap_error(status: int, body: Any) -> dict[str, Any]:
    message = body.get("detail") if isinstance(body, dict) else str(body)
    wrapped = {"errorCode": status, "errorMessage": message, "payload": None, "detail": message}
    if isinstance(body, dict) and body.get("errors"):
        wrapped["errors"] = body["errors"]
    return wrapped


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a body nested too deeply for Python's parser a 4xx, not a 500
    (RecursionError is no ValueError). For ``DEFAULT_PARSER_CLASSES``."""

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class EnvelopeJSONRenderer(JSONRenderer):
    """JSON renderer that applies the envelope and never emits NaN."""

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ):
        context = renderer_context or {}
        response = context.get("response")
        view = context.get("view")
        if response is not None and envelope_enabled(view):
            if response.status_code >= 400:
                data = wrap_error(response.status_code, data)
            else:
                data = wrap_success(data)
        return super().render(data, accepted_media_type, renderer_context)


def encode(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes, the one encoder for hand-built bodies and WebSocket
    messages (orjson: a live-value burst encodes 50K entries; NaN and ±Inf, which never should
    get here, come out as null)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def dumps(value: Any) -> str:
    """``encode`` as text."""
    return encode(value).decode()


def stream_json(
    head: dict[str, Any], list_key: str, rows: Iterable[str], *, view: Any = None
) -> StreamingHttpResponse:
    """Stream ``head`` with ``list_key`` holding pre-encoded JSON rows, inside the envelope.

    Used for responses too large to build in memory (a 50K-value snapshot): rows are encoded
    one at a time by the caller and written as they come.
    """

    def chunks() -> Iterator[bytes]:
        body = dict(head)
        body[list_key] = None
        encoded = dumps(wrap_success(body) if envelope_enabled(view) else body)
        marker = f'"{list_key}":null'
        before, after = encoded.rsplit(marker, 1)
        yield (before + f'"{list_key}":[').encode()
        buffer: list[str] = []
        size = 0
        first = True
        for row in rows:
            buffer.append(row if first else "," + row)
            first = False
            size += len(row)
            if size > 256_000:
                yield "".join(buffer).encode()
                buffer, size = [], 0
        buffer.append("]" + after)
        yield "".join(buffer).encode()

    return StreamingHttpResponse(chunks(), content_type="application/json")


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """``X-API-Key`` in the OpenAPI schema (squirrel.auth.ApiKeyAuthentication)."""

    target_class = "squirrel.auth.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "X-API-Key"}


class StaffSessionScheme(OpenApiAuthenticationExtension):
    """A staff user's Django session (squirrel.auth.StaffSessionAuthentication)."""

    target_class = "squirrel.auth.StaffSessionAuthentication"
    name = "staffSessionAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


_FIELD_ERRORS = {
    "type": "array",
    "items": {"type": "object"},
    "description": "Field errors of a 422: {loc, msg, type}",
}


def _bare_route(path: str) -> bool:
    """Routes the contract never envelopes (their errors neither): health but the heartbeat,
    the WebSocket status, and everything outside /v1."""
    return (
        not path.startswith("/v1/")
        or path == "/v1/ws/status"
        or (path.startswith("/v1/health/") and path != "/v1/health/heartbeat")
    )


def envelope_schema_hook(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Document the envelope in the OpenAPI schema: every /v1 JSON response is wrapped, and
    every operation's errors (4XX) are described, enveloped or bare as they are served."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "description": "Every error, enveloped: errorCode is the HTTP status.",
        "properties": {
            "errorCode": {"type": "integer"},
            "errorMessage": {"type": "string"},
            "payload": {"nullable": True},
            "detail": {"type": "string"},
            "errors": _FIELD_ERRORS,
        },
        "required": ["errorCode", "errorMessage", "payload", "detail"],
    }
    schemas["BareError"] = {
        "type": "object",
        "description": "An error outside the envelope (SQUIRREL_API_ENVELOPE=false, health).",
        "properties": {"detail": {"type": "string"}, "errors": _FIELD_ERRORS},
        "required": ["detail"],
    }
    for path, operations in result.get("paths", {}).items():
        enveloped = settings.API_ENVELOPE and not _bare_route(path)
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            # ``x-envelope: false``: a file download, bare (its errors are still enveloped)
            if enveloped and operation.get("x-envelope") is not False:
                _envelope_success(operation)
            operation.setdefault("responses", {}).setdefault(
                "4XX",
                {
                    "description": "Error" + (" in the envelope" if enveloped else ""),
                    "content": {
                        "application/json": {
                            "schema": {
                                "$ref": "#/components/schemas/"
                                + ("Error" if enveloped else "BareError")
                            }
                        }
                    },
                },
            )
    return result


def _envelope_success(operation: dict[str, Any]) -> None:
    for code, response in operation.get("responses", {}).items():
        content = response.get("content", {}).get("application/json")
        if content and "schema" in content and str(code).startswith("2"):
            content["schema"] = {
                "type": "object",
                "properties": {
                    "errorCode": {"type": "integer", "enum": [0]},
                    "errorMessage": {"type": "string", "nullable": True},
                    "payload": content["schema"],
                },
                "required": ["errorCode", "errorMessage", "payload"],
            }

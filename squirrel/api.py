"""The API envelope (contract §1.5, decision 2), shared by every /v1 view.

One renderer wraps success bodies as ``{"errorCode":0,"errorMessage":null,"payload":...}``
and errors as ``{"errorCode":<status>,"errorMessage":msg,"payload":null,"detail":msg}``.
Views that the contract leaves bare set ``envelope = False``; ``SQUIRREL_API_ENVELOPE=false``
turns the envelope off everywhere (HEAD-style bodies).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework.renderers import JSONRenderer


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


def finite(value: Any) -> Any:
    """Replace NaN and ±Inf with None, recursively through lists (contract §8.3)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


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


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON, the one encoder for hand-built bodies."""
    return _encode(value)


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
        encoded = _encode(wrap_success(body) if envelope_enabled(view) else body)
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


def envelope_schema_hook(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Document the envelope in the OpenAPI schema: every /v1 JSON response is wrapped."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "description": "Every error, enveloped: errorCode is the HTTP status.",
        "properties": {
            "errorCode": {"type": "integer"},
            "errorMessage": {"type": "string"},
            "payload": {"nullable": True},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Field errors of a 422: {loc, msg, type}",
            },
        },
        "required": ["errorCode", "errorMessage", "payload", "detail"],
    }
    if not settings.API_ENVELOPE:
        return result
    for path, operations in result.get("paths", {}).items():
        if (
            not path.startswith("/v1/")
            or path == "/v1/ws/status"
            or (path.startswith("/v1/health/") and path != "/v1/health/heartbeat")
        ):
            continue
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {}).get("application/json")
                if not content or "schema" not in content:
                    continue
                if str(code).startswith("2"):
                    content["schema"] = {
                        "type": "object",
                        "properties": {
                            "errorCode": {"type": "integer", "enum": [0]},
                            "errorMessage": {"type": "string", "nullable": True},
                            "payload": content["schema"],
                        },
                        "required": ["errorCode", "errorMessage", "payload"],
                    }
            operation.setdefault("responses", {}).setdefault(
                "4XX",
                {
                    "description": "Error in the envelope",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            )
    return result

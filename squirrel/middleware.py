"""Streams sync streaming bodies chunk by chunk under ASGI.

Django's ASGI handler otherwise collects a synchronous ``StreamingHttpResponse`` into one list
before sending it: a 50K-value snapshot (39 MB of JSON) would sit in memory at once. This
middleware hands such bodies over as an async iterator that pulls one chunk per hop to the
request's sync thread (the one holding its database cursor).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse


async def _in_thread(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    iterator = iter(chunks)
    # sync_to_async's ParamSpec keeps only next()'s first overload, not the 2-argument form
    step = cast(
        "Callable[[Iterator[bytes], None], Coroutine[Any, Any, bytes | None]]",
        sync_to_async(next, thread_sensitive=True),
    )
    try:
        while (chunk := await step(iterator, None)) is not None:  # chunks are bytes, never None
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


class AsyncStreamingMiddleware:
    """Serve sync streaming responses incrementally when running under ASGI."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if (
            isinstance(request, ASGIRequest)
            and isinstance(response, StreamingHttpResponse)
            and not response.is_async
        ):
            # the stubs cannot tie is_async to the union: a sync response streams bytes
            content = cast("Iterable[bytes]", response.streaming_content)
            response.streaming_content = _in_thread(content)
        return response

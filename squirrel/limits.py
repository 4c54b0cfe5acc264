"""Request size limits at the edge, before authentication or parsing costs anything (issue 15).

1. daphne (twisted) reads a whole request body before it calls the ASGI app -- below 100 kB into
   memory, else into a temporary file -- and then puts all of it into the app's input queue in
   one go. A 1 GB unauthenticated POST grew the web process by 700 MB whatever the app did: an
   ASGI middleware runs only after the last byte has arrived. So ``install`` gives daphne a
   request class of ours, ``BoundedWebRequest``: a body whose declared Content-Length is over
   SQUIRREL_MAX_BODY_MB is answered 413 as soon as the headers are in, and a chunked body is
   counted while it arrives and answered 413 once over. The rest of a refused body is read and
   dropped, never stored (a client that sends everything before reading, as most libraries do,
   still gets the 413), for at most ``LINGER_SECONDS``; then the connection is closed.
2. ``BodyLimit`` does the same in front of Django for ASGI servers that stream a body to the
   app (uvicorn, hypercorn): by the declared length before the app runs, and by counting the
   ``http.request`` messages, stopping the read (Django would spool it all to disk first).
3. What the app cannot bound: a body within the limit still sits in daphne's queue whole (up
   to SQUIRREL_MAX_BODY_MB per request in flight), and slow or idle clients hold connections.
   The reverse proxy in front of daphne (README "Security") bounds both.
4. daphne closes a socket whose WebSocket message is over 1 MiB (autobahn's default), and a
   subscribe of SQUIRREL_WEBSOCKET_MAX_PVS_PER_MESSAGE names is larger: every command that
   starts daphne passes ``DAPHNE_OPTIONS`` (tests/edge/test_launch.py checks each one).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import daphne.server  # noqa: F401  (first: it installs twisted's asyncio reactor)
from daphne import http_protocol
from django.conf import settings

from squirrel.api import encode, wrap_error
from squirrel.exceptions import BODY_TOO_LARGE

log = logging.getLogger(__name__)

# Seconds a refused body may go on arriving (and be dropped) before the connection is cut.
LINGER_SECONDS = 5.0
# 50,000 names of up to ~150 characters; autobahn holds at most this much of one message.
WEBSOCKET_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
DAPHNE_OPTIONS = [
    "--websocket-max-message-size", str(WEBSOCKET_MAX_MESSAGE_BYTES),
    "--websocket-max-frame-size", str(WEBSOCKET_MAX_MESSAGE_BYTES),
]  # fmt: skip

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def max_body() -> int:
    """The largest body accepted, in bytes (SQUIRREL_MAX_BODY_MB)."""
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def too_large_body(path: str) -> bytes:
    """The 413's JSON: the envelope on /v1 (as squirrel.views' error pages), else bare."""
    body: dict[str, Any] = {"detail": BODY_TOO_LARGE}
    if path.startswith("/v1/") and settings.API_ENVELOPE:
        body = wrap_error(413, body)
    return encode(body)


class BoundedWebRequest(http_protocol.WebRequest):
    """daphne's request, refusing an oversized body before it is stored (module docstring, 1)."""

    refused = False
    received = 0
    _linger: Any = None

    def gotLength(self, length: int | None) -> None:
        """Headers are in: refuse by the declared length before any byte of the body."""
        if length is not None and length > max_body():
            self._refuse(f"declared {length} bytes")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return  # dropped
        self.received += len(data)
        if self.received > max_body():
            self._refuse(f"over {self.received} bytes, chunked")
            return
        super().handleContentChunk(data)

    def process(self) -> Any:
        """The whole body has arrived; a refused request was answered already: close."""
        if self.refused:
            self.channel.transport.loseConnection()
            return None
        return super().process()

    def connectionLost(self, reason: Any) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def _refuse(self, why: str) -> None:
        self.refused = True
        stored = getattr(self, "content", None)
        if stored is not None:
            stored.close()  # a temporary file so far: deleted
        self.content = io.BytesIO()  # twisted reads it once the (dropped) body has ended
        # twisted answers "Expect: 100-continue" right after gotLength: not after our answer
        self.requestHeaders.removeHeader(b"expect")
        path = getattr(self.channel, "_path", b"").split(b"?")[0].decode("ascii", "replace")
        body = too_large_body(path)
        channel = self.channel
        channel.persistent = False
        channel.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self._linger = channel.callLater(LINGER_SECONDS, channel.transport.abortConnection)
        log.warning("request body refused (%s; limit %d): %s", why, max_body(), path)


def install() -> None:
    """Make daphne build its HTTP requests from ``BoundedWebRequest`` (its HTTPFactory looks
    the class up by name on every connection; daphne has no option for it)."""
    http_protocol.WebRequest = BoundedWebRequest


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # Django and the server answer a malformed length
    return None


class BodyLimit:
    """ASGI middleware: 413 for a body over the limit, without reading the rest of it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = max_body()
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._answer(scope, send)
            return
        received = 0
        over = started = False

        async def bounded_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True  # the app (Django: RequestAborted) stops reading, sends nothing
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, bounded_receive, tracking_send)
        if over and not started:
            await self._answer(scope, send)

    @staticmethod
    async def _answer(scope: Scope, send: Send) -> None:
        body = too_large_body(scope.get("path", ""))
        log.warning("request body refused (limit %d): %s", max_body(), scope.get("path"))
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

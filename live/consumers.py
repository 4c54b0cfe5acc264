"""WebSocket live values (contract §4): /v1/ws/pvs and its alias /v1/ws/live.

The consumer only parses frames, checks read scope at connect (an API key, a staff session, or
the anonymous level: squirrel.auth), and hands subscriptions to the process's FanOut
(live.fanout), which owns the Redis listener and the batching, and closes the socket of a key or
session revoked meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from live.fanout import POLICY_VIOLATION, Client, FanOut, fanout
from live.services import live_addresses_for_snapshot, live_addresses_for_tags
from squirrel.api import dumps
from squirrel.auth import (
    Credential,
    Principal,
    anonymous_principal,
    principal_for_token,
    session_origin_allowed,
    staff_principal,
)

log = logging.getLogger(__name__)


class LiveValuesConsumer(AsyncWebsocketConsumer):
    """Subscribe to PVs by name, tag or snapshot; receive ``initial`` then batched ``diff``s."""

    # Live values go through our own fan-out, never through the channel layer.
    channel_layer_alias = "squirrel-no-channel-layer"

    client: Client | None = None
    hub: FanOut | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Whatever ends this consumer -- a disconnect, an exception, daphne cancelling it --
        its fan-out registration ends with it (a crashed consumer's ``disconnect`` never runs:
        200 bad frames once left 200 clients and 200,000 subscriptions behind)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._forget()

    async def connect(self) -> None:
        principal, credential = await self._principal()
        if principal is None or not principal.read:
            await self.close(code=POLICY_VIOLATION)
            return
        await self.accept()
        self.hub = fanout()
        self.client = self.hub.add_client(self._send_text, close=self.close, credential=credential)

    async def disconnect(self, code: int) -> None:
        self._forget()

    def _forget(self) -> None:
        if self.client is not None and self.hub is not None:
            self.hub.remove_client(self.client)
        self.client = None

    async def _principal(self) -> tuple[Principal | None, Credential | None]:
        """Who is connecting, and what to re-check while the socket is open: a key (header or
        ``?api_key=``), else a staff session from this site's own pages, else the anonymous
        level (squirrel.auth)."""
        headers = dict(self.scope.get("headers") or [])
        token = headers.get(b"x-api-key", b"").decode()
        if not token:
            query = parse_qs(self.scope.get("query_string", b"").decode())
            token = (query.get("api_key") or [""])[0]
        if token:
            principal = await database_sync_to_async(principal_for_token)(token)
            key_id = principal.api_key_id if principal is not None else None
            return principal, Credential(api_key_id=key_id)
        user, session = self.scope.get("user"), self.scope.get("session")
        staff = None
        if session_origin_allowed(headers):
            # reads the user's permissions and restore limits: database work, off the loop
            staff = await database_sync_to_async(staff_principal)(user)
        if staff is not None and session is not None:
            return staff, Credential(session_key=session.session_key, user_id=str(user.pk))
        return anonymous_principal(), None

    async def _send_json(self, message: dict[str, Any]) -> None:
        await self.send(text_data=dumps(message))

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def _error(self, message: str) -> None:
        await self._send_json({"type": "error", "message": message})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.client is None:
            return
        try:
            message = orjson.loads(text_data if text_data is not None else bytes_data or b"")
        except orjson.JSONDecodeError as exc:  # also bad UTF-8, and nesting past 1024 levels
            deep = "depth" in str(exc)
            await self._error(f"Malformed message: {'nested too deeply' if deep else 'not JSON'}")
            return
        if not isinstance(message, dict):
            await self._error("Malformed message: expected a JSON object")
            return
        kind = message.get("type")
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "get_all": self._get_all,
            "ping": self._ping,
        }
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:  # unknown types are ignored (contract §4.2)
            return
        try:
            await handler(message)
        except Exception as exc:  # the socket lives on; the client hears why
            log.exception("live socket: %s failed", kind)
            await self._error(f"Failed to handle {kind}: {type(exc).__name__}")

    async def _names(self, message: dict[str, Any]) -> list[str] | None:
        """The names a (un)subscribe message asks for, or None after sending an error."""
        names = message.get("pvNames", message.get("pv_names", []))
        if names is None:
            names = []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            await self._error("pvNames must be a list of strings")
            return None
        names = list(names)
        try:
            tag_ids = message.get("tagIds")
            if tag_ids is not None:
                if not isinstance(tag_ids, list):
                    await self._error("tagIds must be a list of tag ids")
                    return None
                names += await database_sync_to_async(live_addresses_for_tags)(tag_ids=tag_ids)
            snapshot_id = message.get("snapshotId")
            if snapshot_id is not None:
                names += await database_sync_to_async(live_addresses_for_snapshot)(
                    snapshot_id=str(snapshot_id)
                )
        except ValueError as exc:
            await self._error(str(exc))
            return None
        if len(names) > settings.WEBSOCKET_MAX_PVS_PER_MESSAGE:
            await self._error(
                f"Too many PVs in one message ({len(names)} > "
                f"{settings.WEBSOCKET_MAX_PVS_PER_MESSAGE}); split it"
            )
            return None
        return list(dict.fromkeys(names))

    async def _subscribe(self, message: dict[str, Any]) -> None:
        names = await self._names(message)
        if names is None or self.client is None or self.hub is None:
            return
        hub = self.hub
        hub.subscribe(self.client, names)
        async with hub.holding(self.client):  # updates from now on follow the initial
            try:
                values = await hub.current(names)
            except Exception as exc:
                await self._error(f"Failed to read cached values: {exc}")
                return
            if values:
                await self._send_json({"type": "initial", "data": values, "count": len(values)})

    async def _unsubscribe(self, message: dict[str, Any]) -> None:
        names = await self._names(message)
        if names is not None and self.client is not None and self.hub is not None:
            self.hub.unsubscribe(self.client, names)

    async def _get_all(self, message: dict[str, Any]) -> None:
        if self.hub is None:
            return
        try:
            values = await self.hub.everything()
        except Exception as exc:
            await self._error(f"Failed to get values: {exc}")
            return
        await self._send_json({"type": "all_values", "values": values, "count": len(values)})

    async def _ping(self, message: dict[str, Any]) -> None:
        await self._send_json({"type": "pong", "timestamp": time.time()})

"""WebSocket hardening (issue 15, items 4 and 8).

Against a real daphne: 200 malformed frames leave /v1/ws/status at its baseline (each used to
crash its consumer before ``disconnect`` ran, leaking the client and its 1,000 subscriptions),
and a subscribe of 50,000 names (SQUIRREL_WEBSOCKET_MAX_PVS_PER_MESSAGE) works (daphne's
default 1 MiB message limit closed the socket). In process: a deactivated key's socket is
closed, staff sessions get live values under anonymous ``none``, other bad frames are errors.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
import redis
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from live.fanout import fanout
from monitor import events
from monitor.values import pack
from squirrel.asgi import application
from squirrel.models import ApiKey
from tests.conftest import make_key

POLICY_VIOLATION = 1008


def entry(value: float) -> dict:
    return {"value": value, "connected": True, "updated_at": time.time(), "severity": 0,
            "status": 0}  # fmt: skip


def ws_status(web) -> tuple[int, int, int]:
    body = web.get_json("/v1/ws/status")
    return body["activeConnections"], body["totalSubscriptions"], body["uniquePVsSubscribed"]


def test_200_malformed_frames_leave_ws_status_at_its_baseline(web):
    url = f"ws://127.0.0.1:{web.port}/v1/ws/pvs"
    baseline = ws_status(web)
    names = [f"EDGE:LEAK:{i}" for i in range(1000)]
    answers: dict[str, int] = {}
    for _ in range(200):
        with ws_connect(url, open_timeout=10) as ws:
            ws.send(json.dumps({"type": "subscribe", "pvNames": names}))
            ws.send("[" * 100_000)
            try:
                reply = json.loads(ws.recv(timeout=10))
                kind = f"{reply['type']}: {reply.get('message')}"
            except ConnectionClosed as closed:
                kind = f"closed {closed.rcvd.code if closed.rcvd else None}"
            answers[kind] = answers.get(kind, 0) + 1
    assert set(answers) == {"error: Malformed message: nested too deeply"}, answers

    deadline = time.monotonic() + 10
    while ws_status(web) != baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ws_status(web) == baseline, (ws_status(web), baseline, web.tail())


def test_a_subscribe_of_50000_names_works(web):
    assert settings.WEBSOCKET_MAX_PVS_PER_MESSAGE == 50_000
    # 64-character names, as long as real facilities' (a 3.4 MB message)
    names = [f"EDGE:{i:06d}:" + "X" * 46 + ":SETPT" for i in range(50_000)]
    assert {len(n) for n in names} == {64}
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        for start in range(0, len(names), 10_000):
            batch = names[start : start + 10_000]
            client.hset(events.values_hash(), mapping={n: pack(entry(1.0)) for n in batch})
        message = json.dumps({"type": "subscribe", "pvNames": names})
        assert len(message) > 3 * 1024 * 1024
        url = f"ws://127.0.0.1:{web.port}/v1/ws/pvs"
        with ws_connect(url, open_timeout=10, max_size=None) as ws:
            ws.send(message)
            initial = json.loads(ws.recv(timeout=30))
            assert initial["type"] == "initial" and initial["count"] == 50_000
            assert ws_status(web)[1] >= 50_000
    finally:
        client.delete(events.values_hash())
        client.close()


# --- in process: who may keep a socket open ------------------------------------------------------


@pytest_asyncio.fixture
async def hub():
    yield fanout()
    await fanout().stop()
    await sync_to_async(connections.close_all)()


async def next_of(ws: WebsocketCommunicator, kind: str) -> dict:
    """The next message of type ``kind`` (heartbeats and others skipped)."""
    while True:
        message = await ws.receive_json_from(timeout=2)
        if message["type"] == kind:
            return message


async def closed_with(ws: WebsocketCommunicator, timeout: float) -> int | None:
    """The close code the server sent within ``timeout`` (other output skipped), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = await ws.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return None
        if message["type"] == "websocket.close":
            return message.get("code")
    return None


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_deactivated_keys_socket_is_closed(hub, settings):
    settings.ANONYMOUS_ACCESS = "none"
    settings.WEBSOCKET_HEARTBEAT_INTERVAL = 0.5
    key, token = await sync_to_async(make_key)("streamer", read=True, write=False)
    other, other_token = await sync_to_async(make_key)("stays", read=True, write=False)
    ws = WebsocketCommunicator(application, f"/v1/ws/pvs?api_key={token}")
    assert (await ws.connect())[0]
    stays = WebsocketCommunicator(application, "/v1/ws/pvs",
                                  headers=[(b"x-api-key", other_token.encode())])  # fmt: skip
    assert (await stays.connect())[0]
    await ws.send_json_to({"type": "subscribe", "pvNames": ["K:1"]})
    await ws.send_json_to({"type": "ping"})
    assert (await next_of(ws, "pong"))["type"] == "pong"
    assert len(fanout().clients) == 2

    await sync_to_async(ApiKey.objects.filter(pk=key.pk).update)(is_active=False)
    assert await closed_with(ws, timeout=5) == POLICY_VIOLATION
    assert len(fanout().clients) == 1 and "K:1" not in fanout().index
    await asyncio.sleep(1.5)  # three more re-checks: an active key keeps its socket
    await stays.send_json_to({"type": "ping"})
    assert (await next_of(stays, "pong"))["type"] == "pong"
    await stays.disconnect()


def staff_session(*, staff: bool = True) -> str:
    user = get_user_model().objects.create_user(f"u{time.monotonic_ns()}", password="pw",
                                                is_staff=staff)  # fmt: skip
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def session_headers(session: str, origin: bytes | None = b"http://testserver") -> list:
    headers = [(b"host", b"testserver"), (b"cookie", f"sessionid={session}".encode())]
    return headers + ([(b"origin", origin)] if origin else [])


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_staff_sessions_get_live_values_under_anonymous_none(hub, settings):
    settings.ANONYMOUS_ACCESS = "none"
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    await client.hset(events.values_hash(), "STAFF:1", pack(entry(4.5)))
    try:
        session = await sync_to_async(staff_session)()
        ws = WebsocketCommunicator(application, "/v1/ws/pvs", headers=session_headers(session))
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "subscribe", "pvNames": ["STAFF:1"]})
        initial = await ws.receive_json_from(timeout=2)
        assert initial["type"] == "initial" and initial["data"]["STAFF:1"]["value"] == 4.5
        await ws.disconnect()

        refused = [
            session_headers(session, origin=b"https://evil.example"),  # another site's page
            session_headers(await sync_to_async(staff_session)(staff=False)),  # not staff
            [(b"host", b"testserver"), (b"cookie", b"sessionid=forged")],
        ]
        for headers in refused:
            other = WebsocketCommunicator(application, "/v1/ws/pvs", headers=headers)
            connected, code = await other.connect()
            assert not connected and code == POLICY_VIOLATION, headers
    finally:
        await client.delete(events.values_hash())
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_logged_out_staff_socket_is_closed(hub, settings):
    from django.contrib.sessions.models import Session

    settings.ANONYMOUS_ACCESS = "none"
    settings.WEBSOCKET_HEARTBEAT_INTERVAL = 0.5
    session = await sync_to_async(staff_session)()
    ws = WebsocketCommunicator(application, "/v1/ws/pvs", headers=session_headers(session))
    assert (await ws.connect())[0]
    await sync_to_async(Session.objects.filter(session_key=session).delete)()  # logout
    assert await closed_with(ws, timeout=5) == POLICY_VIOLATION


@pytest.mark.asyncio
async def test_other_bad_frames_are_errors_and_the_socket_lives_on(hub):
    ws = WebsocketCommunicator(application, "/v1/ws/pvs")
    assert (await ws.connect())[0]
    frames = [
        {"text_data": json.dumps({"type": ["unhashable"]})},
        {"text_data": json.dumps({"type": {"a": 1}})},
        {"bytes_data": b"\xff\xfe not utf-8"},
        {"text_data": "{" * 50_000},
        {"text_data": json.dumps({"type": "subscribe", "pvNames": [[[[]]]]})},
    ]
    for frame in frames:
        await ws.send_to(**frame)
        if "type" in frame.get("text_data", "") and "subscribe" not in frame["text_data"]:
            continue  # unknown types are ignored (contract §4.2)
        reply = await ws.receive_json_from(timeout=2)
        assert reply["type"] == "error", (frame, reply)
    await ws.send_json_to({"type": "ping"})
    assert (await ws.receive_json_from(timeout=2))["type"] == "pong"
    await ws.disconnect()
    assert fanout().clients == {}

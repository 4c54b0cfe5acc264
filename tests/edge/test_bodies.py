"""Large request bodies are refused before they are read (issue 15, item 3).

daphne reads a whole request body (into a temporary file) before it calls the ASGI app, then
hands all of it to the app's queue at once: a 1 GB POST grew the web process by 700 MB. The
refusal therefore happens in daphne's request handling (squirrel.limits.BoundedWebRequest), by
the declared Content-Length before any byte of the body is read, and by counting while a chunked
body arrives; and again in front of Django for ASGI servers that stream (squirrel.limits.BodyLimit).
"""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
from django.conf import settings

from squirrel.limits import LINGER_SECONDS, BodyLimit

MB = 1024 * 1024
MESSAGE = "Request body too large (limit: SQUIRREL_MAX_BODY_MB)"


def enveloped_413(status: int, body: bytes) -> None:
    assert status == 413, body[:300]
    parsed = json.loads(body)
    assert parsed == {"errorCode": 413, "errorMessage": MESSAGE, "payload": None,
                      "detail": MESSAGE}  # fmt: skip


def test_a_100_mb_unauthenticated_post_is_413_and_daphne_stays_small(web):
    """An ordinary client (http.client: sends the whole body, then reads) gets the 413."""
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < 100 * MB
    body = b"x" * (100 * MB)
    web.start_measuring()
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
    started = time.monotonic()
    connection.request("POST", "/v1/pvs", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    enveloped_413(response.status, response.read())
    seconds = time.monotonic() - started
    connection.close()
    grown = web.grown_mb()
    print(f"FIGURE: 100 MB POST refused 413 in {seconds:.2f} s, daphne peak RSS +{grown:.1f} MB")
    assert grown < 20, f"daphne grew {grown:.0f} MB\n{web.tail()}"


def raw_post(port: int, head: bytes, chunks, *, read_early: bool) -> tuple[int, bytes]:
    """Send ``head`` then ``chunks``; with ``read_early``, stop sending once the server has
    answered (as curl does). The status and body of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(head)
        sock.setblocking(False)
        for chunk in chunks:
            if read_early:
                try:
                    peek = sock.recv(1, socket.MSG_PEEK)
                except BlockingIOError:
                    peek = b""
                if peek:
                    break
            view = memoryview(chunk)
            while view:
                try:
                    sent = sock.send(view)
                    view = view[sent:]
                except BlockingIOError:
                    time.sleep(0.001)
        sock.setblocking(True)
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = sock.recv(65536)
            assert data, f"closed without an answer: {raw!r}"
            raw += data
        head_part, rest = raw.split(b"\r\n\r\n", 1)
        lines = head_part.decode().split("\r\n")
        status = int(lines[0].split()[1])
        length = next(int(v) for k, v in (h.split(": ", 1) for h in lines[1:])
                      if k.lower() == "content-length")  # fmt: skip
        while len(rest) < length:
            data = sock.recv(65536)
            assert data, "closed mid-answer"
            rest += data
        return status, rest[:length]
    finally:
        sock.close()


def test_a_declared_length_over_the_limit_is_answered_before_the_body(web):
    """curl-like: the 413 is there right after the headers, before any body byte."""
    head = (
        b"POST /v1/snapshots HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
        b"\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (10 * 1024 * MB)
    )
    web.start_measuring()
    started = time.monotonic()
    status, body = raw_post(web.port, head, (b"x" * MB for _ in range(10 * 1024)),
                            read_early=True)  # fmt: skip
    enveloped_413(status, body)
    assert time.monotonic() - started < 5  # not after 10 GB
    assert web.grown_mb() < 20


def test_a_chunked_body_is_cut_off_at_the_limit(web):
    """No Content-Length: counted while it arrives, refused once over the limit."""
    chunk = b"x" * MB
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    count = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // MB + 36  # 100 MB by default
    head = (
        b"POST /v1/pvs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    web.start_measuring()
    chunks = [*(framed for _ in range(count)), b"0\r\n\r\n"]
    status, body = raw_post(web.port, head, chunks, read_early=False)
    enveloped_413(status, body)
    assert web.grown_mb() < 20


def test_bodies_within_the_limit_still_arrive_whole(web):
    """A 3 MB body (over twisted's in-memory threshold: a temporary file) reaches the view."""
    names = [f"EDGE:BODY:{i:07d}" for i in range(150_000)]
    data = json.dumps({"pv_names": names}).encode()
    assert 2 * MB < len(data) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=60)
    connection.request("POST", "/v1/pvs/live", data, {"Content-Type": "application/json"})
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 200, body
    assert body["payload"] == {}  # none of them cached: parsed whole, answered


# --- the ASGI layer (for servers that stream the body to the app) ------------------------------


class Recorder:
    """An ASGI app standing in for Django: records whether it ran and reads the whole body."""

    def __init__(self) -> None:
        self.called = False
        self.aborted = False

    async def __call__(self, scope, receive, send) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.aborted = True
                return  # as Django's read_body does: RequestAborted, nothing sent
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def run(app, headers, chunks) -> tuple[list[dict], int]:
    """Drive ``app`` with the body ``chunks``; the messages it sent, and how many chunks it
    took."""
    sent: list[dict] = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
             for i, c in enumerate(chunks)]  # fmt: skip
    taken = 0

    async def receive():
        nonlocal taken
        if taken < len(queue):
            taken += 1
            return queue[taken - 1]
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/pvs", "headers": headers}
    await app(scope, receive, send)
    return sent, taken


def status_and_body(sent: list[dict]) -> tuple[int, bytes]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.asyncio
async def test_asgi_layer_refuses_a_declared_length_without_calling_the_app(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    inner = Recorder()
    sent, taken = await run(BodyLimit(inner), [(b"content-length", b"1001")], [b"x" * 1001])
    enveloped_413(*status_and_body(sent))
    assert not inner.called and taken == 0


@pytest.mark.asyncio
async def test_asgi_layer_counts_a_streamed_body_and_stops_reading(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    inner = Recorder()
    sent, taken = await run(BodyLimit(inner), [], [b"x" * 400] * 10)
    enveloped_413(*status_and_body(sent))
    assert inner.aborted and taken == 3  # 1200 bytes seen, the other 7 chunks never read


@pytest.mark.asyncio
async def test_asgi_layer_passes_bodies_within_the_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    inner = Recorder()
    sent, _ = await run(BodyLimit(inner), [(b"content-length", b"1000")], [b"x" * 500] * 2)
    assert status_and_body(sent) == (200, b"ok") and not inner.aborted


def test_a_refused_client_that_stalls_is_cut_off(web):
    """Answered, then given LINGER_SECONDS to finish sending (dropped), then disconnected."""
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=30)
    try:
        sock.sendall(b"POST /v1/pvs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
                     % (10 * 1024 * MB) + b"x" * MB)  # fmt: skip
        started = time.monotonic()
        raw = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            raw += data
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert LINGER_SECONDS - 1 < waited < LINGER_SECONDS + 3, waited

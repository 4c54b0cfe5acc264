"""The reverse proxy of docker-compose.yml (deploy/nginx.conf.template), run by a real nginx
in front of a real daphne: bodies over SQUIRREL_MAX_BODY_MB refused before daphne sees them,
WebSockets upgraded, and X-Forwarded-Proto set by the proxy, never taken from the client.

Needs Debian's nginx (.ci/run installs it); skipped on a machine without it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.e2e.stack import Proc, wait_for
from tests.epics import free_port
from tests.load.conftest import answers, daphne, publish
from tests.processes import ROOT

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db,  # the test database exists for daphne
    pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed"),
]
MAX_BODY_MB = 1


def nginx_conf(tmp: Path, *, listen: int, upstream: int) -> Path:
    """The template as the nginx image renders it (only SQUIRREL_* substituted), inside the
    minimal main configuration the image has, pointed at loopback ports."""
    server = TEMPLATE.read_text().replace("${SQUIRREL_MAX_BODY_MB}", str(MAX_BODY_MB))
    assert "${" not in server
    assert "server web:8080;" in server and "listen 8080;" in server
    server = server.replace("server web:8080;", f"server 127.0.0.1:{upstream};")
    server = server.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                         "uwsgi", "scgi")
    )  # fmt: skip
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp / 'nginx.pid'};\nerror_log stderr warn;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n{temp}\n{server}\n}}\n"
    )
    return conf


@pytest.fixture
def proxied(tmp_path) -> Iterator[tuple[int, int, Proc]]:
    """(proxy port, daphne port, daphne) with the settings production uses behind it."""
    env = {
        "SQUIRREL_MAX_BODY_MB": str(MAX_BODY_MB),
        "SQUIRREL_PROXY_SSL_HEADER": "true",
        "SQUIRREL_SSL_REDIRECT": "true",
    }
    with daphne(**env) as (web, web_port):
        port = free_port()
        conf = nginx_conf(tmp_path, listen=port, upstream=web_port)
        check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)],
                               capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0, check.stderr
        proxy = Proc("nginx", [NGINX, "-p", str(tmp_path), "-c", str(conf)], {}).start()
        try:
            wait_for(lambda: answers(f"http://127.0.0.1:{port}/health"), 10, "nginx answers",
                     context=proxy.tail)  # fmt: skip
            yield port, web_port, web
        finally:
            proxy.stop()


def raw_request(port: int, head: str) -> tuple[int, str]:
    """Send only a request's head; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.decode(errors="replace").partition("\r\n")
    return int(status_line.split()[1]), rest.split("\r\n\r\n", 1)[-1]


def get(url: str, **headers: str) -> tuple[int, str | None]:
    """(status, Location) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.headers.get("Location")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location")


def test_body_over_the_limit_is_refused_by_the_proxy_alone(proxied):
    port, _, web = proxied
    declared = (MAX_BODY_MB + 1) * 1024 * 1024
    status, body = raw_request(
        port,
        "POST /v1/pvs/multi HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n"
        "Connection: close\r\n\r\n",
    )  # the body is never sent: refused by its declared length
    assert status == 413
    answer = json.loads(body)
    assert answer["errorCode"] == 413 and answer["payload"] is None, answer
    assert f"limit {MAX_BODY_MB} MB" in answer["detail"]
    assert "/v1/pvs/multi" not in web.tail(200)  # daphne never saw the request


def test_the_proxy_sets_x_forwarded_proto_itself(proxied):
    """Behind the proxy, SQUIRREL_PROXY_SSL_HEADER trusts X-Forwarded-Proto: the proxy must
    overwrite a client's claim of https (this proxy is plain http, so: redirected)."""
    port, web_port, _ = proxied
    status, location = get(f"http://127.0.0.1:{port}/v1/tags", **{"X-Forwarded-Proto": "https"})
    # the Host the client sent ($http_host, port included: Origin must match it for sessions)
    assert status == 301 and location == f"https://127.0.0.1:{port}/v1/tags", (status, location)
    # the container's health check asks over http and is not redirected
    assert get(f"http://127.0.0.1:{port}/health")[0] == 200
    # daphne alone believes any client: why it must only be reached through the proxy
    status, _ = get(f"http://127.0.0.1:{web_port}/v1/tags", **{"X-Forwarded-Proto": "https"})
    assert status == 200


def test_websocket_upgrade_through_the_proxy(proxied, redis_client):
    port, _, _ = proxied
    publish(redis_client, {"PROXY:A": 1.0, "PROXY:B": 2.0})

    async def subscribe() -> dict:
        # SSL redirect is on, but it concerns HTTP only: the upgrade goes through
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws/pvs", open_timeout=10) as ws:
            await ws.send(json.dumps({"type": "subscribe", "pvNames": ["PROXY:A", "PROXY:B"]}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                if message["type"] == "initial":
                    return message

    initial = asyncio.run(subscribe())
    assert initial["count"] == 2
    assert initial["data"]["PROXY:B"]["value"] == 2.0

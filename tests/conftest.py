"""Fixtures shared by every test: API clients, keys, and Redis cleanup.

Tests run against the real PostgreSQL and Redis on loopback. Each run has its own Redis key
prefix (settings.TESTING), and every key under it is deleted when the run ends.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from monitor import events
from squirrel.models import TOKEN_PREFIX, ApiKey, hash_token
from tests.epics import sim_ioc  # noqa: F401  (the shared small simulated IOC)


@pytest.fixture(scope="session", autouse=True)
def _redis_cleanup() -> Iterator[None]:
    yield
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=10_000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])
    client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    keys = list(client.scan_iter(match=f"{settings.REDIS_PREFIX}*", count=10_000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def monitor_heartbeat(redis_client) -> Iterator[None]:
    """A live monitor's heartbeat, kept fresh for the whole test (every 0.5 s, as a leader's
    loop does): the cache a test fills is then trusted (monitor.cache's liveness rule), also by
    worker processes that read it seconds later."""
    stop = threading.Event()

    def beat() -> None:
        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            while not stop.is_set():
                client.set(events.heartbeat_key(), str(time.time()))
                stop.wait(0.5)
        finally:
            client.close()

    redis_client.set(events.heartbeat_key(), str(time.time()))
    thread = threading.Thread(target=beat, name="test-monitor-heartbeat", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(5)


@pytest.fixture
def redis_down(settings) -> None:
    """Point the app at a closed Redis port for one test."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def api() -> APIClient:
    """A client with no key: what the unchanged React frontend is."""
    return APIClient()


def make_key(
    name: str,
    *,
    read: bool,
    write: bool,
    admin: bool = False,
    restore: bool = False,
    restore_tag_ids: list[Any] | None = None,
) -> tuple[ApiKey, str]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        app_name=name,
        token_hash=hash_token(token),
        read_access=read,
        write_access=write,
        admin_access=admin,
        restore_access=restore,
        restore_tag_ids=restore_tag_ids,
    )
    return key, token


@pytest.fixture
def read_client(db) -> APIClient:
    _, token = make_key("reader", read=True, write=False)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


@pytest.fixture
def write_client(db) -> APIClient:
    _, token = make_key("writer", read=True, write=True)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


@pytest.fixture
def key_admin_client(db) -> APIClient:
    """A key with the admin scope (it manages API keys), and read and write."""
    _, token = make_key("keyadmin", read=True, write=True, admin=True)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def payload(response) -> object:
    """The envelope's payload of a successful response, after checking the envelope."""
    body = response.json()
    assert response.status_code == 200, body
    assert set(body) == {"errorCode", "errorMessage", "payload"}, body
    assert body["errorCode"] == 0 and body["errorMessage"] is None
    return body["payload"]


def error(response, status: int) -> str:
    """The message of an enveloped error, after checking status and shape."""
    body = response.json()
    assert response.status_code == status, body
    assert body["errorCode"] == status and body["payload"] is None, body
    assert isinstance(body["errorMessage"], str) and body["errorMessage"], body
    assert body["detail"] == body["errorMessage"]
    return body["errorMessage"]

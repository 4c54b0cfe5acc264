"""CORS (issue 15, item 5): only /v1/, only configured origins, never with credentials.

Before, every origin got ``Access-Control-Allow-Origin: <origin>`` with ``-Credentials: true``
on every path: a page elsewhere read /v1/api-keys and admin pages with a staff session.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.processes import ROOT

pytestmark = pytest.mark.django_db

FOREIGN = "https://evil.example"
FRONTEND = "http://localhost:5173"  # the React frontend's Vite dev server


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("cors-admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


def cors(response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.items() if k.lower().startswith("access-control")}


@pytest.mark.parametrize("path", ["/admin/", "/admin/squirrel/apikey/", "/v1/api-keys",
                                  "/v1/api-keys/count", "/v1/pvs", "/live/pvs"])  # fmt: skip
def test_a_foreign_origin_gets_no_cors_at_all(staff, path):
    response = staff.get(path, HTTP_ORIGIN=FOREIGN)
    assert cors(response) == {}, (path, cors(response))


@pytest.mark.parametrize("path", ["/v1/api-keys", "/v1/pvs"])
def test_a_foreign_preflight_is_not_allowed(staff, path):
    response = staff.options(path, HTTP_ORIGIN=FOREIGN,
                             HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")  # fmt: skip
    assert "access-control-allow-origin" not in cors(response)
    assert "access-control-allow-credentials" not in cors(response)


def test_a_configured_origin_gets_cors_on_v1_without_credentials(staff, settings):
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND]
    response = staff.get("/v1/pvs", HTTP_ORIGIN=FRONTEND)
    assert response.status_code == 200
    assert cors(response)["access-control-allow-origin"] == FRONTEND
    assert "access-control-allow-credentials" not in cors(response)
    preflight = staff.options(
        "/v1/snapshots",
        HTTP_ORIGIN=FRONTEND,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, x-api-key",
    )
    headers = cors(preflight)
    assert headers["access-control-allow-origin"] == FRONTEND
    assert {"content-type", "x-api-key"} <= set(headers["access-control-allow-headers"].split(", "))
    assert "access-control-allow-credentials" not in headers
    # ... but nothing outside /v1/, and no credentials on the key routes either
    assert cors(staff.get("/admin/", HTTP_ORIGIN=FRONTEND)) == {}
    assert "access-control-allow-credentials" not in cors(
        staff.get("/v1/api-keys", HTTP_ORIGIN=FRONTEND)
    )


def settings_in_a_process(**env: str) -> subprocess.CompletedProcess:
    code = "import squirrel.settings as s; print(s.CORS_ALLOWED_ORIGINS, s.CORS_ALLOW_CREDENTIALS)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SQUIRREL_SECRET_KEY": "x", **env},
        timeout=60,
    )


def test_the_origin_list_comes_from_the_environment_and_is_checked():
    default = settings_in_a_process()
    assert default.stdout.strip() == "[] False", default.stderr
    given = settings_in_a_process(
        SQUIRREL_CORS_ORIGINS="http://localhost:5173, https://squirrel.lab.example:8443"
    )
    assert given.stdout.strip() == (
        "['http://localhost:5173', 'https://squirrel.lab.example:8443'] False"
    ), given.stderr
    for bad in ("*", "localhost:5173", "http://localhost:5173/", "http://x/path"):
        refused = settings_in_a_process(SQUIRREL_CORS_ORIGINS=bad)
        assert refused.returncode != 0 and "SQUIRREL_CORS_ORIGINS" in refused.stderr, bad


def test_env_origins(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from squirrel.env import env_origins

    monkeypatch.delenv("X_ORIGINS", raising=False)
    assert env_origins("X_ORIGINS") == []
    monkeypatch.setenv("X_ORIGINS", " http://a:1 ,https://b.example ")
    assert env_origins("X_ORIGINS") == ["http://a:1", "https://b.example"]
    for bad in ("ftp://a", "http://", "https://a/b", "http://a?x", "http://user@a", "*"):
        monkeypatch.setenv("X_ORIGINS", bad)
        with pytest.raises(ImproperlyConfigured, match="X_ORIGINS"):
            env_origins("X_ORIGINS")

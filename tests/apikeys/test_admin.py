"""API-key admin: the token is shown once at creation; keys are deactivated, not edited."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest
from django.test import Client

from squirrel.models import ApiKey, hash_token
from tests.conftest import make_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


def _cookie_texts(client: Client, response) -> list[str]:
    """Every cookie the browser now holds or was just sent, raw and, for the messages cookie,
    decoded (it is signed, not encrypted: whoever holds it reads it)."""
    jars = [*response.cookies.values(), *client.cookies.values()]
    texts = [morsel.value for morsel in jars]
    for morsel in jars:
        if morsel.key == CookieStorage.cookie_name and morsel.value:
            decoded = CookieStorage(HttpRequest())._decode(morsel.value) or []
            texts.extend(str(m) for m in decoded)
    return texts


def test_api_key_admin_add_shows_token_once(staff):
    add = "/admin/squirrel/apikey/add/"
    html = staff.get(add).content.decode()
    assert "token_hash" not in html
    response = staff.post(add, {"app_name": "adm", "read_access": "on"})
    # no token travels in a cookie (the messages cookie is signed, not encrypted)
    assert not [text for text in _cookie_texts(staff, response) if "sq_" in text]
    assert response.status_code == 200  # the answer to the form shows the token itself
    key = ApiKey.objects.get(app_name="adm")
    token = re.search(r'id="api-key-token"[^>]*>(sq_[^<]+)<', response.content.decode()).group(1)
    assert key.token_hash == hash_token(token)
    assert (key.read_access, key.write_access, key.admin_access) == (True, False, False)
    assert (key.is_active, key.created_by) == (True, "user:admin")
    assert "no-store" in response["Cache-Control"]
    # ... and nowhere else: not in a cookie, not in a later page
    assert not any(token in text for text in _cookie_texts(staff, response))
    assert not [m for m in get_messages(response.wsgi_request) if token in str(m)]
    listing = staff.get("/admin/squirrel/apikey/")
    assert token not in listing.content.decode()
    assert not any(token in text for text in _cookie_texts(staff, listing))
    page = staff.get(f"/admin/squirrel/apikey/{key.pk}/change/").content.decode()
    assert token not in page and key.token_hash not in page
    assert "user:admin" in page
    # a key without access is refused by the form, nothing is created
    staff.post(add, {"app_name": "none"})
    assert not ApiKey.objects.filter(app_name="none").exists()


def test_api_key_admin_add_admin_key(staff):
    response = staff.post(
        "/admin/squirrel/apikey/add/",
        {"app_name": "boss", "read_access": "on", "admin_access": "on"},
    )
    assert response.status_code == 200 and "read, admin" in response.content.decode()
    key = ApiKey.objects.get(app_name="boss")
    assert (key.admin_access, key.created_by) == (True, "user:admin")


def test_api_key_admin_deactivate_action(staff):
    key, _ = make_key("old", read=True, write=False)
    response = staff.post(
        "/admin/squirrel/apikey/",
        {"action": "deactivate", "_selected_action": [str(key.pk)]},
    )
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.is_active is False
    assert staff.get(f"/admin/squirrel/apikey/{key.pk}/delete/").status_code == 403

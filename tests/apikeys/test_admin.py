"""API-key admin: the token is shown once at creation; keys are deactivated, not edited."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
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


def test_api_key_admin_add_shows_token_once(staff):
    add = "/admin/squirrel/apikey/add/"
    html = staff.get(add).content.decode()
    assert "token_hash" not in html
    response = staff.post(add, {"app_name": "adm", "read_access": "on"})
    assert response.status_code == 302
    key = ApiKey.objects.get(app_name="adm")
    (message,) = [str(m) for m in get_messages(response.wsgi_request) if "Token" in str(m)]
    token = re.search(r"(sq_\S+)", message).group(1)
    assert key.token_hash == hash_token(token)
    assert (key.read_access, key.write_access, key.is_active) == (True, False, True)
    assert token in staff.get(response.url).content.decode()  # the page after saving shows it
    page = staff.get(f"/admin/squirrel/apikey/{key.pk}/change/").content.decode()
    assert token not in page and key.token_hash not in page
    # a key without access is refused by the form, nothing is created
    staff.post(add, {"app_name": "none"})
    assert not ApiKey.objects.filter(app_name="none").exists()


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

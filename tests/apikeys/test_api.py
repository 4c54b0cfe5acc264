"""/v1/api-keys (contract §2.7) and the key management commands."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from squirrel import services
from squirrel.exceptions import Conflict
from squirrel.models import TOKEN_PREFIX, ApiKey, hash_token
from tests.conftest import error, make_key, payload

pytestmark = pytest.mark.django_db

KEY_KEYS = {"id", "appName", "isActive", "readAccess", "writeAccess", "createdAt", "updatedAt"}


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def test_create_shows_token_once_and_stores_only_its_hash(write_client):
    got = payload(
        write_client.post(
            "/v1/api-keys",
            {"appName": "robot", "readAccess": True, "writeAccess": False},
            format="json",
        )
    )
    assert set(got) == KEY_KEYS | {"token"}
    assert got["token"].startswith(TOKEN_PREFIX) and len(got["token"]) >= 46
    key = ApiKey.objects.get(pk=got["id"])
    assert key.token_hash == hash_token(got["token"]) != got["token"]
    assert (got["appName"], got["isActive"], got["readAccess"], got["writeAccess"]) == (
        "robot",
        True,
        True,
        False,
    )
    # the token works, with exactly its scopes
    robot = _client(got["token"])
    assert payload(robot.get("/v1/api-keys/count")) == ApiKey.objects.count()
    assert "write access" in error(robot.delete(f"/v1/api-keys/{got['id']}"), 401)
    # and it never appears again
    listed = payload(write_client.get("/v1/api-keys"))
    assert all(set(k) == KEY_KEYS for k in listed)
    assert got["token"] not in str(listed)


@pytest.mark.parametrize(
    "body",
    [
        {"readAccess": True, "writeAccess": True},
        {"appName": "x", "writeAccess": True},
        {"appName": "x", "readAccess": True},
        {"appName": "x", "readAccess": "maybe", "writeAccess": True},
        {"appName": "", "readAccess": True, "writeAccess": True},
        {"appName": "x" * 256, "readAccess": True, "writeAccess": True},
        [],
    ],
)
def test_create_invalid_body_is_422(write_client, body):
    before = ApiKey.objects.count()
    error(write_client.post("/v1/api-keys", body, format="json"), 422)
    assert ApiKey.objects.count() == before


def test_create_conflicts(write_client):
    no_access = {"appName": "n", "readAccess": False, "writeAccess": False}
    assert error(write_client.post("/v1/api-keys", no_access, format="json"), 409) == (
        "Cannot create an API Key with no access."
    )
    body = {"appName": "dup", "readAccess": True, "writeAccess": False}
    first = payload(write_client.post("/v1/api-keys", body, format="json"))
    assert error(write_client.post("/v1/api-keys", body, format="json"), 409) == (
        "An API Key with appName 'dup' already exists."
    )
    # once deactivated, the name is free again
    payload(write_client.delete(f"/v1/api-keys/{first['id']}"))
    again = payload(write_client.post("/v1/api-keys", body, format="json"))
    assert again["id"] != first["id"]
    assert ApiKey.objects.filter(app_name="dup").count() == 2


def test_list_and_count_active_only(write_client):
    inactive, _ = make_key("old", read=True, write=False)
    ApiKey.objects.filter(pk=inactive.pk).update(is_active=False)
    all_keys = payload(write_client.get("/v1/api-keys?active_only=false"))
    active = payload(write_client.get("/v1/api-keys?active_only=true"))
    assert {k["appName"] for k in all_keys} == {"writer", "old"}
    assert [k["appName"] for k in active] == ["writer"]
    assert payload(write_client.get("/v1/api-keys/count")) == 2
    assert payload(write_client.get("/v1/api-keys/count?active_only=true")) == 1
    body = write_client.get("/v1/api-keys/count").json()
    assert body["payload"] == 2 and type(body["payload"]) is int
    error(write_client.get("/v1/api-keys?active_only=perhaps"), 422)


def test_deactivate(write_client):
    key, token = make_key("victim", read=True, write=False)
    got = payload(write_client.delete(f"/v1/api-keys/{key.pk}"))
    assert set(got) == KEY_KEYS
    assert got["isActive"] is False and got["id"] == str(key.pk)
    assert error(_client(token).get("/v1/api-keys"), 401) == "Missing or deactivated API key"
    assert "already inactive" in error(write_client.delete(f"/v1/api-keys/{key.pk}"), 409)


def test_deactivating_own_key_needs_force(write_client):
    own = ApiKey.objects.get(app_name="writer")
    assert error(write_client.delete(f"/v1/api-keys/{own.pk}"), 409) == (
        "Cannot deactivate the API key currently used for authentication"
    )
    assert ApiKey.objects.get(pk=own.pk).is_active
    got = payload(write_client.delete(f"/v1/api-keys/{own.pk}?force=true"))
    assert got["isActive"] is False
    error(write_client.get("/v1/api-keys"), 401)


@pytest.mark.parametrize("bad", ["nope", str(uuid.uuid4())])
def test_deactivate_unknown_or_malformed_is_404(write_client, bad):
    error(write_client.delete(f"/v1/api-keys/{bad}"), 404)


def test_scopes(read_client, api, settings):
    assert isinstance(payload(read_client.get("/v1/api-keys")), list)
    body = {"appName": "z", "readAccess": True, "writeAccess": True}
    assert "write access" in error(read_client.post("/v1/api-keys", body, format="json"), 401)
    settings.ANONYMOUS_ACCESS = "read"
    error(api.post("/v1/api-keys", body, format="json"), 401)
    assert not ApiKey.objects.filter(app_name="z").exists()


def test_service_trims_the_name_before_the_duplicate_check():
    services.api_key_create(app_name="race", read_access=True, write_access=False)
    with pytest.raises(Conflict):
        services.api_key_create(app_name=" race ", read_access=True, write_access=False)


# --- commands ----------------------------------------------------------------------------------


def test_create_api_key_command_prints_token_once():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "ops", "--read", "--write", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith(TOKEN_PREFIX)
    key = ApiKey.objects.get(token_hash=hash_token(token))
    assert (key.app_name, key.read_access, key.write_access, key.is_active) == (
        "ops",
        True,
        True,
        True,
    )
    assert "shown only now" in err.getvalue()
    assert payload(_client(token).get("/v1/api-keys/count")) == 1


def test_create_api_key_command_errors():
    with pytest.raises(CommandError, match="--read and/or --write"):
        call_command("create_api_key", "none")
    call_command("create_api_key", "ro", "-r", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_api_key", "ro", "-w", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiKey.objects.count() == 1


def test_list_and_deactivate_commands():
    key, _ = make_key("listed", read=True, write=False)
    out = io.StringIO()
    call_command("list_api_keys", stdout=out)
    line = out.getvalue().strip()
    assert str(key.pk) in line and "listed" in line and "active" in line
    assert key.token_hash not in line
    out = io.StringIO()
    call_command("deactivate_api_key", str(key.pk), stdout=out)
    assert "Deactivated" in out.getvalue()
    assert not ApiKey.objects.get(pk=key.pk).is_active
    out = io.StringIO()
    call_command("list_api_keys", "--active-only", stdout=out, stderr=io.StringIO())
    assert out.getvalue() == ""
    with pytest.raises(CommandError, match="already inactive"):
        call_command("deactivate_api_key", str(key.pk))
    with pytest.raises(CommandError, match="not found"):
        call_command("deactivate_api_key", "garbage")

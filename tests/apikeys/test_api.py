"""/v1/api-keys (contract §2.7) and the key management commands."""

from __future__ import annotations

import io
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from squirrel import services
from squirrel.exceptions import Conflict
from squirrel.models import TOKEN_PREFIX, ApiKey, hash_token
from tests.conftest import error, make_key, payload

pytestmark = pytest.mark.django_db

CONTRACT_KEYS = {"id", "appName", "isActive", "readAccess", "writeAccess", "createdAt", "updatedAt"}
# the extras: admin scope, creator, restore scope and its tags (issue 18)
KEY_KEYS = CONTRACT_KEYS | {"adminAccess", "createdBy", "restoreAccess", "restoreTagIds"}


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=token)
    return client


def test_create_shows_token_once_and_stores_only_its_hash(key_admin_client):
    got = payload(
        key_admin_client.post(
            "/v1/api-keys",
            {"appName": "robot", "readAccess": True, "writeAccess": False},
            format="json",
        )
    )
    assert set(got) == KEY_KEYS | {"token"}
    assert got["token"].startswith(TOKEN_PREFIX) and len(got["token"]) >= 46
    assert (got["adminAccess"], got["createdBy"]) == (False, "api-key:keyadmin")
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
    assert "admin access" in error(robot.delete(f"/v1/api-keys/{got['id']}"), 401)
    # and it never appears again
    listed = payload(key_admin_client.get("/v1/api-keys"))
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
def test_create_invalid_body_is_422(key_admin_client, body):
    before = ApiKey.objects.count()
    error(key_admin_client.post("/v1/api-keys", body, format="json"), 422)
    assert ApiKey.objects.count() == before


def test_create_conflicts(key_admin_client):
    no_access = {"appName": "n", "readAccess": False, "writeAccess": False}
    assert error(key_admin_client.post("/v1/api-keys", no_access, format="json"), 409) == (
        "Cannot create an API Key with no access."
    )
    body = {"appName": "dup", "readAccess": True, "writeAccess": False}
    first = payload(key_admin_client.post("/v1/api-keys", body, format="json"))
    assert error(key_admin_client.post("/v1/api-keys", body, format="json"), 409) == (
        "An API Key with appName 'dup' already exists."
    )
    # once deactivated, the name is free again
    payload(key_admin_client.delete(f"/v1/api-keys/{first['id']}"))
    again = payload(key_admin_client.post("/v1/api-keys", body, format="json"))
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


def test_deactivate(key_admin_client):
    key, token = make_key("victim", read=True, write=False)
    got = payload(key_admin_client.delete(f"/v1/api-keys/{key.pk}"))
    assert set(got) == KEY_KEYS
    assert got["isActive"] is False and got["id"] == str(key.pk)
    assert error(_client(token).get("/v1/api-keys"), 401) == "Missing or deactivated API key"
    assert "already inactive" in error(key_admin_client.delete(f"/v1/api-keys/{key.pk}"), 409)


def test_deactivating_own_key_needs_force(key_admin_client):
    own = ApiKey.objects.get(app_name="keyadmin")
    assert error(key_admin_client.delete(f"/v1/api-keys/{own.pk}"), 409) == (
        "Cannot deactivate the API key currently used for authentication"
    )
    assert ApiKey.objects.get(pk=own.pk).is_active
    got = payload(key_admin_client.delete(f"/v1/api-keys/{own.pk}?force=true"))
    assert got["isActive"] is False
    error(key_admin_client.get("/v1/api-keys"), 401)


@pytest.mark.parametrize("bad", ["nope", str(uuid.uuid4())])
def test_deactivate_unknown_or_malformed_is_404(key_admin_client, bad):
    error(key_admin_client.delete(f"/v1/api-keys/{bad}"), 404)


def test_scopes(read_client, api, settings):
    assert isinstance(payload(read_client.get("/v1/api-keys")), list)
    body = {"appName": "z", "readAccess": True, "writeAccess": True}
    assert "admin access" in error(read_client.post("/v1/api-keys", body, format="json"), 401)
    settings.ANONYMOUS_ACCESS = "read"
    error(api.post("/v1/api-keys", body, format="json"), 401)
    assert not ApiKey.objects.filter(app_name="z").exists()


# --- who manages keys (issue 15, item 7): staff users and admin keys only -------------------


def test_a_plain_write_key_cannot_create_or_deactivate_keys(write_client):
    victim, victim_token = make_key("victim", read=True, write=False)
    body = {"appName": "escalate", "readAccess": True, "writeAccess": True}
    response = write_client.post("/v1/api-keys", body, format="json")
    assert error(response, 401) == "API key does not have admin access"
    body["adminAccess"] = True
    assert error(write_client.post("/v1/api-keys", body, format="json"), 401) == (
        "API key does not have admin access"
    )
    assert error(write_client.delete(f"/v1/api-keys/{victim.pk}"), 401) == (
        "API key does not have admin access"
    )
    assert not ApiKey.objects.filter(app_name="escalate").exists()
    assert ApiKey.objects.get(pk=victim.pk).is_active
    assert isinstance(payload(_client(victim_token).get("/v1/api-keys")), list)


@pytest.mark.parametrize("level", ["read", "write"])
def test_anonymous_never_manages_keys(api, settings, level):
    settings.ANONYMOUS_ACCESS = level
    victim, _ = make_key("victim", read=True, write=False)
    body = {"appName": "anon", "readAccess": True, "writeAccess": True, "adminAccess": True}
    assert error(api.post("/v1/api-keys", body, format="json"), 401) == (
        "Missing or deactivated API key"
    )
    assert error(api.delete(f"/v1/api-keys/{victim.pk}?force=true"), 401) == (
        "Missing or deactivated API key"
    )
    assert not ApiKey.objects.filter(app_name="anon").exists()
    assert ApiKey.objects.get(pk=victim.pk).is_active
    assert isinstance(payload(api.get("/v1/api-keys")), list)  # reading stays as the level says


def test_an_admin_key_manages_keys_and_is_recorded_as_their_creator(key_admin_client):
    body = {"appName": "ops", "readAccess": True, "writeAccess": False, "adminAccess": True}
    ops = payload(key_admin_client.post("/v1/api-keys", body, format="json"))
    assert (ops["adminAccess"], ops["createdBy"]) == (True, "api-key:keyadmin")
    stored = ApiKey.objects.get(pk=ops["id"])
    assert (stored.admin_access, stored.created_by) == (True, "api-key:keyadmin")
    # the admin key it made manages keys in turn (admin does not need write), recorded as itself
    made = _client(ops["token"])
    plain = {"appName": "plain", "readAccess": True, "writeAccess": True}
    plain_key = payload(made.post("/v1/api-keys", plain, format="json"))
    assert (plain_key["adminAccess"], plain_key["createdBy"]) == (False, "api-key:ops")
    assert payload(made.delete(f"/v1/api-keys/{plain_key['id']}"))["isActive"] is False
    listed = {k["appName"]: k for k in payload(key_admin_client.get("/v1/api-keys"))}
    assert listed["ops"]["createdBy"] == "api-key:keyadmin"
    assert listed["keyadmin"]["createdBy"] is None  # made directly in the database


def test_a_staff_session_manages_keys_and_is_recorded_as_creator(db):
    user = get_user_model().objects.create_user("alice", password="pw", is_staff=True)
    staff = APIClient()
    staff.force_login(user)
    body = {"appName": "by-alice", "readAccess": True, "writeAccess": False}
    got = payload(staff.post("/v1/api-keys", body, format="json"))
    assert got["createdBy"] == "user:alice"
    assert payload(staff.delete(f"/v1/api-keys/{got['id']}"))["isActive"] is False
    # a logged-in user who is not staff is anonymous to the API
    nobody = APIClient()
    nobody.force_login(get_user_model().objects.create_user("bob", password="pw"))
    error(nobody.post("/v1/api-keys", {**body, "appName": "by-bob"}, format="json"), 401)


def test_service_trims_the_name_before_the_duplicate_check():
    services.api_key_create(app_name="race", read_access=True, write_access=False, created_by=None)
    with pytest.raises(Conflict):
        services.api_key_create(
            app_name=" race ", read_access=True, write_access=False, created_by=None
        )


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
    assert key.admin_access is False and key.created_by.startswith("cli")
    body = {"appName": "x", "readAccess": True, "writeAccess": False}
    error(_client(token).post("/v1/api-keys", body, format="json"), 401)


def test_create_api_key_command_admin():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", "boss", "--read", "--admin", stdout=out, stderr=err)
    token = out.getvalue().strip()
    key = ApiKey.objects.get(token_hash=hash_token(token))
    assert (key.read_access, key.write_access, key.admin_access) == (True, False, True)
    assert "admin" in err.getvalue()
    body = {"appName": "x", "readAccess": True, "writeAccess": False}
    assert payload(_client(token).post("/v1/api-keys", body, format="json"))["appName"] == "x"
    with pytest.raises(CommandError, match="--read and/or --write"):
        call_command("create_api_key", "only-admin", "--admin")


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

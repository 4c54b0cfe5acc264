"""Services of the squirrel app: API keys (contract §2.7, §3.8).

A key's token (``sq_`` + 32 random bytes, url-safe) is returned once, at creation; only its
SHA-256 hash is stored. Keys are never deleted, only deactivated.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from squirrel import audit
from squirrel.auth import ANONYMOUS
from squirrel.exceptions import Conflict, NotFound
from squirrel.models import TOKEN_PREFIX, ApiKey, hash_token


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key and its token, which exists nowhere else once this is dropped."""

    key: ApiKey
    token: str


def api_key_token_new() -> str:
    """A fresh token: ``sq_`` + ``secrets.token_urlsafe(32)``."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def api_key_create(
    *,
    app_name: str,
    read_access: bool,
    write_access: bool,
    admin_access: bool = False,
    restore_access: bool = False,
    restore_tag_ids: list[uuid.UUID] | None = None,
    created_by: str | None,
) -> CreatedApiKey:
    """Create an active key, recording who made it (``api-key:<name>``, ``user:<name>``,
    ``cli:<name>``); Conflict (409) without read or write access (admin alone is not a key
    the API could authenticate any read with) or when an active key of that name exists."""
    app_name = app_name.strip()
    if not (read_access or write_access):
        raise Conflict("Cannot create an API Key with no access.")
    duplicate = Conflict(f"An API Key with appName '{app_name}' already exists.")
    if ApiKey.objects.filter(app_name=app_name, is_active=True).exists():
        raise duplicate
    token = api_key_token_new()
    key = ApiKey(
        app_name=app_name,
        token_hash=hash_token(token),
        read_access=read_access,
        write_access=write_access,
        admin_access=admin_access,
        restore_access=restore_access,
        restore_tag_ids=list(restore_tag_ids) if restore_tag_ids else None,
        created_by=created_by,
    )
    key.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            key.save()
            audit.record(
                created_by or ANONYMOUS,
                "apikey.create",
                key,
                summary=app_name,
                after=api_key_fields(key),
            )
    except IntegrityError:  # a concurrent create of the same name won the race
        raise duplicate from None
    return CreatedApiKey(key=key, token=token)


def api_key_fields(key: ApiKey) -> dict[str, object]:
    """A key's name and scopes as its audit records show them (never its hash)."""
    return {
        "appName": key.app_name,
        "scopes": key.scope_letters,
        "restoreTagIds": [str(t) for t in key.restore_tag_ids or []] or None,
        "isActive": key.is_active,
    }


def api_key_get(*, key_id: str) -> ApiKey:
    """The key, or NotFound (404) for an unknown or malformed id."""
    try:
        return ApiKey.objects.get(pk=uuid.UUID(str(key_id)))
    except (ApiKey.DoesNotExist, ValueError):
        raise NotFound(f"API key {key_id} not found") from None


def api_key_deactivate(
    *, key_id: str, current_key_id: str | None, force: bool = False, actor: str | None = None
) -> ApiKey:
    """Deactivate a key (soft delete). Conflict (409) when it is already inactive, or when it
    is the key authenticating this request and ``force`` is not set."""
    with transaction.atomic():
        key = api_key_get(key_id=key_id)
        key = ApiKey.objects.select_for_update().get(pk=key.pk)
        if not key.is_active:
            raise Conflict(f"API key {key_id} is already inactive")
        if current_key_id is not None and str(key.pk) == str(current_key_id) and not force:
            raise Conflict("Cannot deactivate the API key currently used for authentication")
        key.is_active = False
        key.save(update_fields=["is_active", "updated_at"])
        audit.record(
            actor or audit.system("internal"),
            "apikey.deactivate",
            key,
            summary=key.app_name,
            before={"isActive": True},
            after={"isActive": False},
        )
    return key

"""Who may call the API (contract decision 4, §1.6).

A request is authenticated by an ``X-API-Key`` header (or ``?api_key=`` on WebSockets), or by
a Django staff session. Without either, ``SQUIRREL_ANONYMOUS_ACCESS`` decides. GET needs read
scope, other methods write scope, except where a view sets ``required_scope``.

The scope ``restore`` writes the machine (restore, plan execute, approve, revert; issue 18):
keys created with it, staff users with the ``squirrel.restore_machine`` permission (the
"Restorers" group), and anonymous callers under ``SQUIRREL_ANONYMOUS_ACCESS=restore``.
``write`` no longer includes it. A restorer may be limited to tags (``restore_tag_ids``).

The scope ``admin``, is for managing API keys (creating and deactivating them): staff
users and keys created with it have it; an anonymous caller never does, whatever
``SQUIRREL_ANONYMOUS_ACCESS`` says, so a key can never outlive the anonymous access it was
made under.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission

from squirrel.models import RESTORE_PERMISSION, ApiKey, UserRestoreLimit, hash_token

MISSING_KEY = "Missing or deactivated API key"
ANONYMOUS = "anonymous"  # the name of a caller without a key (under SQUIRREL_ANONYMOUS_ACCESS)


@dataclass(frozen=True)
class Principal:
    """The caller as the API sees it: a name for audit records, its scopes, and whether it is
    a staff user (who may also see deployment details, such as the EPICS address list)."""

    name: str
    read: bool
    write: bool
    admin: bool = False
    staff: bool = False
    api_key_id: str | None = None
    is_authenticated: bool = True
    # Writing the machine (restore, plan execute, approve, revert): a scope of its own.
    restore: bool = False
    # Tag ids this caller's restores may write (None: every PV).
    restore_tag_ids: tuple[uuid.UUID, ...] | None = None

    def allows(self, scope: str) -> bool:
        if scope == "admin":
            return self.admin
        if scope == "restore":
            return self.restore
        return self.write if scope == "write" else self.read


def staff_name(user: Any) -> str:
    """How a staff user is named in audit records (``created_by``): ``user:<username>``."""
    return f"user:{user.get_username()}"


def anonymous_principal() -> Principal | None:
    level = settings.ANONYMOUS_ACCESS
    if level == "none":
        return None
    return Principal(
        name=ANONYMOUS,
        read=True,
        write=level in ("write", "restore"),
        restore=level == "restore",
    )


def principal_for_token(token: str) -> Principal | None:
    """The active key with this token, as a Principal, or None."""
    key = (
        ApiKey.objects.filter(token_hash=hash_token(token), is_active=True)
        .only(
            "id",
            "app_name",
            "read_access",
            "write_access",
            "admin_access",
            "restore_access",
            "restore_tag_ids",
        )
        .first()
    )
    if key is None:
        return None
    return Principal(
        name=f"api-key:{key.app_name}",
        read=key.read_access,
        write=key.write_access,
        admin=key.admin_access,
        api_key_id=str(key.id),
        restore=key.restore_access,
        restore_tag_ids=tuple(key.restore_tag_ids) if key.restore_tag_ids else None,
    )


class ApiKeyAuthentication(BaseAuthentication):
    """``X-API-Key`` header: an unknown or deactivated key is a 401, never anonymous."""

    def authenticate(self, request: Any) -> tuple[Principal, str] | None:
        token = request.headers.get("X-API-Key")
        if not token:
            return None
        principal = principal_for_token(token)
        if principal is None:
            raise exceptions.AuthenticationFailed(MISSING_KEY)
        return principal, token

    def authenticate_header(self, request: Any) -> str:
        return "X-API-Key"


class StaffSessionAuthentication(SessionAuthentication):
    """A logged-in staff user's session (CSRF enforced, as for any cookie-borne auth)."""

    def authenticate(self, request: Any) -> tuple[Principal, None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        principal = staff_principal(result[0])
        return None if principal is None else (principal, None)


def required_scope(request: Any, view: Any) -> str:
    explicit = getattr(view, "required_scope", None)
    if isinstance(explicit, dict):
        explicit = explicit.get(request.method)
    if explicit:
        return explicit
    return "read" if request.method in ("GET", "HEAD", "OPTIONS") else "write"


def request_principal(request: Any) -> Principal | None:
    user = getattr(request, "user", None)
    return user if isinstance(user, Principal) else anonymous_principal()


def created_by(request: Any) -> str | None:
    """Who a write is recorded as (snapshots, jobs, restores, plans): the identified caller's
    name (``api-key:<name>``, a staff user's), and null for an anonymous one (contract: a
    snapshot's ``createdBy`` is null when nobody is known)."""
    principal = request_principal(request)
    if principal is None or principal.name == ANONYMOUS:
        return None
    return principal.name


def require_scope(request: Any, scope: str) -> Principal:
    """The caller, if it has ``scope``; else 401 (contract §1.6: a missing key and a key
    without the scope are both 401): "Missing or deactivated API key" for a caller without a
    key, "API key does not have <scope> access" for a key."""
    principal = request_principal(request)
    if principal is None:
        raise exceptions.NotAuthenticated(MISSING_KEY)
    if not principal.allows(scope):
        if principal.name == ANONYMOUS:
            raise exceptions.NotAuthenticated(MISSING_KEY)
        raise exceptions.PermissionDenied(f"API key does not have {scope} access")
    return principal


class ScopePermission(BasePermission):
    """Read scope for reads, write scope for writes, admin scope where a view says so;
    anonymous callers per the setting (never admin)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        scope = required_scope(request, view)
        if scope == "none":
            return True
        require_scope(request, scope)
        return True


def staff_principal(user: Any) -> Principal | None:
    """A logged-in staff user as a Principal (read, write, admin; restore with the Django
    permission ``squirrel.restore_machine``, e.g. through the "Restorers" group, limited to
    the tags of its ``UserRestoreLimit`` if it has one), or None for anyone else."""
    if user is None or not user.is_authenticated or not user.is_staff:
        return None
    restore = user.has_perm(RESTORE_PERMISSION)
    limit = (
        UserRestoreLimit.objects.filter(user_id=user.pk).values_list("tag_ids", flat=True).first()
        if restore
        else None
    )
    return Principal(
        name=staff_name(user),
        read=True,
        write=True,
        admin=True,
        staff=True,
        restore=restore,
        restore_tag_ids=tuple(limit) if limit is not None else None,
    )


# --- long-lived connections (live.consumers, live.fanout) ---------------------------------------
# A WebSocket stays open for hours: what let it in (a ``Credential``) is re-checked while it does.


def session_origin_allowed(headers: Mapping[bytes, bytes]) -> bool:
    """Whether a WebSocket handshake may use the session cookie: from this site's own pages
    (``Origin`` is the ``Host``, or one of SQUIRREL_CSRF_TRUSTED_ORIGINS), or from a program
    (no ``Origin``). Another site's page gets no session, as it gets no credentialed CORS."""
    origin = headers.get(b"origin")
    if origin is None:
        return True
    text = origin.decode("latin-1")
    return urlsplit(text).netloc == headers.get(b"host", b"").decode("latin-1") or (
        text in settings.CSRF_TRUSTED_ORIGINS
    )


@dataclass(frozen=True)
class Credential:
    """What let a WebSocket in: an API key, or a staff user's session (none if anonymous)."""

    api_key_id: str | None = None
    session_key: str | None = field(default=None, repr=False)  # a secret: never in logs
    user_id: str | None = None


def credentials_revoked(credentials: Collection[Credential]) -> set[Credential]:
    """Those of ``credentials`` no longer good: a key deactivated, deleted or without read
    access; a session logged out, expired, or whose user is no longer active staff (Django's
    own session check: ``get_user``). One query for the keys, a few per session."""
    revoked: set[Credential] = set()
    key_ids = {c.api_key_id for c in credentials if c.api_key_id}
    if key_ids:
        good = {
            str(pk)
            for pk in ApiKey.objects.filter(
                pk__in=key_ids, is_active=True, read_access=True
            ).values_list("pk", flat=True)
        }
        revoked |= {c for c in credentials if c.api_key_id and c.api_key_id not in good}
    store = import_module(settings.SESSION_ENGINE).SessionStore
    for credential in credentials:
        if credential.session_key:
            user = get_user(SimpleNamespace(session=store(credential.session_key)))  # type: ignore[arg-type]
            if staff_principal(user) is None or str(user.pk) != credential.user_id:
                revoked.add(credential)
    return revoked

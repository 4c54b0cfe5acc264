"""Who may call the API (contract decision 4, §1.6).

A request is authenticated by an ``X-API-Key`` header (or ``?api_key=`` on WebSockets), or by
a Django staff session. Without either, ``SQUIRREL_ANONYMOUS_ACCESS`` decides. GET needs read
scope, other methods write scope, except where a view sets ``required_scope``.

The third scope, ``admin``, is for managing API keys (creating and deactivating them): staff
users and keys created with it have it; an anonymous caller never does, whatever
``SQUIRREL_ANONYMOUS_ACCESS`` says, so a key can never outlive the anonymous access it was
made under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission

from squirrel.models import ApiKey, hash_token

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

    def allows(self, scope: str) -> bool:
        if scope == "admin":
            return self.admin
        return self.write if scope == "write" else self.read


def staff_name(user: Any) -> str:
    """How a staff user is named in audit records (``created_by``): ``user:<username>``."""
    return f"user:{user.get_username()}"


def anonymous_principal() -> Principal | None:
    level = settings.ANONYMOUS_ACCESS
    if level == "none":
        return None
    return Principal(name=ANONYMOUS, read=True, write=level == "write")


def principal_for_token(token: str) -> Principal | None:
    """The active key with this token, as a Principal, or None."""
    key = (
        ApiKey.objects.filter(token_hash=hash_token(token), is_active=True)
        .only("id", "app_name", "read_access", "write_access", "admin_access")
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
        user = result[0]
        if not user.is_staff:
            return None
        principal = Principal(name=staff_name(user), read=True, write=True, admin=True, staff=True)
        return principal, None


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

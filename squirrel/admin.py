"""Admin of API keys: creating one generates its token and shows it ONCE; keys are
deactivated (an action), never edited; the token hash is never shown or editable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from squirrel import services
from squirrel.exceptions import SquirrelError
from squirrel.models import ApiKey

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("app_name", "read_access", "write_access", "is_active", "created_at")
    list_filter = ("is_active", "read_access", "write_access")
    search_fields = ("app_name", "=id")
    ordering = ("app_name", "created_at")
    actions = ["deactivate"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> _FieldGroups:
        if obj is None:
            return ["app_name", "read_access", "write_access"]
        return ["id", "app_name", "read_access", "write_access", "is_active", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["id", "app_name", "read_access", "write_access", "is_active", "created_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are deactivated, never deleted (audit)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # nothing on a key is editable
        created = services.api_key_create(
            app_name=obj.app_name, read_access=obj.read_access, write_access=obj.write_access
        )
        for field in ("id", "token_hash", "is_active", "created_at", "updated_at"):
            setattr(obj, field, getattr(created.key, field))
        obj._state.adding = False
        obj._state.db = created.key._state.db
        messages.warning(
            request,
            f"Token of '{created.key.app_name}': {created.token} — copy it now, "
            "it is shown only this once.",
        )

    @admin.action(description="Deactivate selected API keys")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done = 0
        for key in queryset.filter(is_active=True):
            try:
                services.api_key_deactivate(key_id=str(key.pk), current_key_id=None)
                done += 1
            except SquirrelError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        self.message_user(request, f"Deactivated {done} API key(s).", messages.SUCCESS)

"""Admin of API keys: creating one generates its token and shows it ONCE, in the answer to the
add form itself (never in a message, whose cookie a browser keeps readable); keys are
deactivated (an action), never edited; the token hash is never shown or editable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from squirrel import services
from squirrel.auth import staff_name
from squirrel.exceptions import SquirrelError
from squirrel.models import ApiKey, AuditEvent, UserRestoreLimit

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups

SCOPES = ("read_access", "write_access", "restore_access", "admin_access")
SHOWN = [
    "id",
    "app_name",
    *SCOPES,
    "restore_tag_ids",
    "is_active",
    "created_by",
    "created_at",
]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("app_name", *SCOPES, "is_active", "created_by", "created_at")
    list_filter = ("is_active", *SCOPES)
    search_fields = ("app_name", "=id")
    ordering = ("app_name", "created_at")
    actions = ["deactivate"]
    # the token of a key this request created, from save_model to response_add
    _tokens: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> _FieldGroups:
        if obj is None:
            return ["app_name", *SCOPES, "restore_tag_ids"]
        return [*SHOWN]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else [*SHOWN]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are deactivated, never deleted (audit)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # nothing on a key is editable
        created = services.api_key_create(
            app_name=obj.app_name,
            read_access=obj.read_access,
            write_access=obj.write_access,
            admin_access=obj.admin_access,
            restore_access=obj.restore_access,
            restore_tag_ids=obj.restore_tag_ids,
            created_by=staff_name(request.user),
        )
        for field in ("id", "token_hash", "is_active", "created_by", "created_at", "updated_at"):
            setattr(obj, field, getattr(created.key, field))
        obj._state.adding = False
        obj._state.db = created.key._state.db
        self._tokens[request] = created.token

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The page that shows the new token, answered to the POST itself: a redirect would
        have to carry the token through a message, i.e. the ``messages`` cookie."""
        token = self._tokens.pop(request, None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        scopes = [f.removesuffix("_access") for f in SCOPES if getattr(obj, f)]
        context = {
            **self.admin_site.each_context(request),
            "title": f"API key {obj.app_name} created",
            "opts": self.opts,
            "key": obj,
            "token": token,
            "scopes": ", ".join(scopes),
        }
        return TemplateResponse(request, "admin/squirrel/apikey/created.html", context)

    @admin.action(description="Deactivate selected API keys")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done = 0
        for key in queryset.filter(is_active=True):
            try:
                services.api_key_deactivate(
                    key_id=str(key.pk), current_key_id=None, actor=staff_name(request.user)
                )
                done += 1
            except SquirrelError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        self.message_user(request, f"Deactivated {done} API key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail, read-only: nobody adds, edits or deletes an event (``squirrel.audit``)."""

    list_display = ("at", "actor", "kind", "object_type", "object_id", "summary")
    list_filter = ("kind", "object_type")
    search_fields = ("actor", "=object_id", "summary")
    date_hierarchy = "at"
    ordering = ("-id",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UserRestoreLimit)
class UserRestoreLimitAdmin(admin.ModelAdmin):
    """The tags a staff user's restores may write (no row: every PV)."""

    list_display = ("user", "tag_ids")
    raw_id_fields = ("user",)

"""Shared model base and the API keys of programs that call the API (contract §3.8)."""

from __future__ import annotations

import hashlib
import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone

from squirrel.hooks import tag_ids_check


class BaseModel(models.Model):
    """UUID primary key and created/updated timestamps, as every contract table has."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


TOKEN_PREFIX = "sq_"


def hash_token(token: str) -> str:
    """The only form in which a token is stored or looked up: SHA-256 hex."""
    return hashlib.sha256(token.encode()).hexdigest()


class ApiKey(BaseModel):
    """A program's key: read and/or write scope, optionally admin (managing keys); only its
    SHA-256 hash is stored, beside who created it."""

    app_name = models.CharField(max_length=255)
    token_hash = models.CharField(max_length=128, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    read_access = models.BooleanField(default=False)
    write_access = models.BooleanField(default=False)
    admin_access = models.BooleanField(
        default=False, help_text="may create and deactivate API keys"
    )
    restore_access = models.BooleanField(
        default=False,
        help_text="may write the machine: restore, execute and approve plans, revert",
    )
    # Tag ids a restore by this key may write (null: every PV). Plain ids, not a relation: the
    # tags app sits above this one (restore plans mark the rest skipped-not-permitted).
    restore_tag_ids = ArrayField(
        models.UUIDField(),
        null=True,
        blank=True,
        help_text="restore only PVs carrying one of these tags (empty: every PV)",
    )
    created_by = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        editable=False,
        help_text="who created the key: api-key:<name>, user:<name> or cli:<name>",
    )

    class Meta:
        db_table = "api_key"
        ordering = ["app_name", "created_at"]
        verbose_name = "API key"
        permissions = [
            # Staff users restore only with this (the "Restorers" group, migration 0004).
            ("restore_machine", "Can write the machine: restore, execute and approve plans"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name"],
                condition=models.Q(is_active=True),
                name="uq_api_key_app_name_active",
            ),
            models.CheckConstraint(
                condition=models.Q(read_access=True) | models.Q(write_access=True),
                name="ck_api_key_has_access",
            ),
        ]

    def __str__(self) -> str:
        state = "" if self.is_active else ", inactive"
        return f"{self.app_name} ({self.scope_letters or '-'}{state})"

    def clean(self) -> None:
        tag_ids_check(self.restore_tag_ids, "restore_tag_ids")

    @property
    def scope_letters(self) -> str:
        """``r``, ``w``, ``x`` (restore) and ``a`` (admin) for the scopes the key has."""
        granted = (
            ("r", self.read_access),
            ("w", self.write_access),
            ("x", self.restore_access),
            ("a", self.admin_access),
        )
        return "".join(letter for letter, on in granted if on)


class AuditEvent(models.Model):
    """One write to the catalog, the snapshots or the machine: who, when, what (``squirrel.audit``
    records them; nothing edits or deletes them). ``actor`` is the caller's audit name
    (``api-key:<name>``, ``user:<name>``, ``cli:<name>``, ``system:<process>`` or ``anonymous``);
    ``kind`` is ``<object>.<verb>`` (``snapshot.delete``); ``before``/``after`` hold the changed
    fields of an edit; ``detail`` anything else worth keeping (counts, a file's name)."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(default=timezone.now, editable=False)
    actor = models.CharField(max_length=255, editable=False)
    kind = models.CharField(max_length=64, editable=False)
    object_type = models.CharField(max_length=64, blank=True, default="", editable=False)
    object_id = models.CharField(max_length=64, blank=True, default="", editable=False)
    summary = models.CharField(max_length=500, blank=True, default="", editable=False)
    before = models.JSONField(null=True, blank=True, editable=False)
    after = models.JSONField(null=True, blank=True, editable=False)
    detail = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        db_table = "audit_event"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["at"], name="ix_audit_at"),
            models.Index(fields=["actor", "-id"], name="ix_audit_actor"),
            models.Index(fields=["kind", "-id"], name="ix_audit_kind"),
            models.Index(fields=["object_type", "object_id"], name="ix_audit_object"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.kind} {self.object_id}".rstrip()


RESTORERS_GROUP = "Restorers"
RESTORE_PERMISSION = "squirrel.restore_machine"


class UserRestoreLimit(models.Model):
    """The tags a staff user's restores may write (no row: every PV)."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="restore_limit")
    tag_ids = ArrayField(models.UUIDField(), help_text="ids of the tags this user may restore")

    class Meta:
        db_table = "user_restore_limit"

    def __str__(self) -> str:
        return f"{self.user_id}: {len(self.tag_ids)} tags"

    def clean(self) -> None:
        tag_ids_check(self.tag_ids, "tag_ids")

"""The audit recorder: an event exists exactly when its change commits; the admin only reads."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from rest_framework.test import APIRequestFactory

from squirrel import audit
from squirrel.models import ApiKey, AuditEvent
from tests.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)


def test_event_rolls_back_with_its_change():
    with pytest.raises(RuntimeError), transaction.atomic():
        key, _ = make_key("gone", read=True, write=False)
        audit.record(audit.cli("op"), "apikey.create", key)
        raise RuntimeError("the change fails after its event was written")
    assert not AuditEvent.objects.exists() and not ApiKey.objects.exists()

    with transaction.atomic():
        key, _ = make_key("kept", read=True, write=False)
        audit.record(audit.cli("op"), "apikey.create", key, after={"name": "kept"})
    ev = AuditEvent.objects.get()
    assert (ev.actor, ev.kind, ev.object_type, ev.object_id) == (
        "cli:op",
        "apikey.create",
        "apikey",
        str(key.pk),
    )
    assert ev.after == {"name": "kept"} and ev.before is None and ev.detail == {}


def test_actor_names_and_changes():
    request = APIRequestFactory().get("/")
    assert audit.actor_of(request) == "anonymous"
    assert audit.system("retention") == "system:retention"
    assert audit.cli("ann") == "cli:ann"
    before, after = audit.changes({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "c": 3})
    assert (before, after) == ({"b": 2}, {"b": 5})


def test_record_many_keeps_order_newest_first():
    audit.record_many(
        audit.event(audit.system("retention"), "snapshot.delete", ("snapshot", i)) for i in range(3)
    )
    assert [e.object_id for e in AuditEvent.objects.all()] == ["2", "1", "0"]


def test_admin_lists_but_never_changes_events():
    audit.record(audit.cli("op"), "pv.update", ("pv", "x"), summary="moved")
    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    listing = client.get("/admin/squirrel/auditevent/")
    assert listing.status_code == 200 and b"pv.update" in listing.content
    assert client.get("/admin/squirrel/auditevent/add/").status_code == 403
    pk = AuditEvent.objects.get().pk
    assert (
        client.post(f"/admin/squirrel/auditevent/{pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert AuditEvent.objects.count() == 1

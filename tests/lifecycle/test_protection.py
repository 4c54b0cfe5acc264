"""Labels, golden and restore-referenced protection, complete deletion, the admin (issue 17
items 1 and 2), every write in the audit."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from pvs.models import PV
from snapshots import services
from snapshots.models import GOLDEN, Restore, RestorePlan, Snapshot, SnapshotValue
from squirrel.models import AuditEvent
from tests.conftest import error, payload
from tests.snapshots.factories import captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def snap() -> Snapshot:
    pvs = PV.objects.bulk_create(PV(setpoint_address=f"LBL:{i}") for i in range(30))
    return snapshot_seed("labelled", (captured(pv, entry(float(i))) for i, pv in enumerate(pvs)))


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("boss", "b@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_put_labels_replaces_them_and_is_audited(write_client, snap):
    body = payload(
        write_client.put(
            f"/v1/snapshots/{snap.pk}/labels",
            {"labels": [" shift ", "tuning", "shift"]},
            format="json",
        )
    )
    assert body["labels"] == ["shift", "tuning"]
    assert body["id"] == str(snap.pk) and body["scheduleId"] is None and body["selection"] is None
    listed = payload(write_client.get("/v1/snapshots"))
    assert listed[0]["labels"] == ["shift", "tuning"]
    body = payload(
        write_client.put(f"/v1/snapshots/{snap.pk}/labels", {"labels": []}, format="json")
    )
    assert body["labels"] == []
    events = list(AuditEvent.objects.filter(kind="snapshot.label").order_by("id"))
    assert [e.after for e in events] == [{"labels": ["shift", "tuning"]}, {"labels": []}]
    assert events[0].actor == "api-key:writer" and events[0].object_id == str(snap.pk)


def test_put_labels_errors(write_client, read_client, snap):
    url = f"/v1/snapshots/{snap.pk}/labels"
    assert "labels" in error(write_client.put(url, {}, format="json"), 422)
    assert "list" in error(write_client.put(url, {"labels": "golden"}, format="json"), 422)
    assert "labels.1" in error(write_client.put(url, {"labels": ["a", ""]}, format="json"), 422)
    assert "64" in error(write_client.put(url, {"labels": ["x" * 65]}, format="json"), 422)
    assert "comma" in error(write_client.put(url, {"labels": ["a,b"]}, format="json"), 422)
    many = {"labels": [f"l{i}" for i in range(51)]}
    assert "50" in error(write_client.put(url, many, format="json"), 422)
    assert error(write_client.put("/v1/snapshots/nope/labels", {"labels": []}, format="json"), 404)
    assert error(read_client.put(url, {"labels": []}, format="json"), 401)
    snap.refresh_from_db()
    assert snap.labels == []


def test_golden_snapshot_delete_is_409_and_nothing_is_deleted(write_client, snap):
    services.snapshot_labels_set(snapshot_id=str(snap.pk), labels=[GOLDEN], actor="cli:t")
    message = error(write_client.delete(f"/v1/snapshots/{snap.pk}"), 409)
    assert "golden" in message and str(snap.pk) in message
    assert Snapshot.objects.filter(pk=snap.pk).exists()
    assert SnapshotValue.objects.filter(snapshot=snap).count() == 30
    assert not AuditEvent.objects.filter(kind="snapshot.delete").exists()
    # Unlabelled, it deletes.
    services.snapshot_labels_set(snapshot_id=str(snap.pk), labels=[], actor="cli:t")
    assert payload(write_client.delete(f"/v1/snapshots/{snap.pk}")) is True


@pytest.mark.parametrize("role", ["snapshot", "safety_snapshot"])
def test_restore_referenced_snapshot_delete_is_409(write_client, snap, role):
    other = snapshot_seed("other", [captured(None, entry(1.0), name="X:1")])
    fields = {"snapshot": other, role: snap} if role == "safety_snapshot" else {role: snap}
    restore = Restore.objects.create(**fields)
    message = error(write_client.delete(f"/v1/snapshots/{snap.pk}"), 409)
    assert str(restore.pk) in message
    assert ("safety snapshot" in message) == (role == "safety_snapshot")
    assert SnapshotValue.objects.filter(snapshot=snap).count() == 30


def test_delete_is_complete_and_audited(write_client, snap):
    plan = RestorePlan.objects.create(snapshot=snap)  # a plan never executed goes with it
    assert payload(write_client.delete(f"/v1/snapshots/{snap.pk}")) is True
    assert not Snapshot.objects.filter(pk=snap.pk).exists()
    assert not SnapshotValue.objects.filter(snapshot_id=snap.pk).exists()
    assert not RestorePlan.objects.filter(pk=plan.pk).exists()
    event = AuditEvent.objects.get(kind="snapshot.delete")
    assert (event.actor, event.object_id) == ("api-key:writer", str(snap.pk))
    assert event.before == {"title": "labelled", "labels": [], "pvCount": 30}
    assert error(write_client.delete(f"/v1/snapshots/{snap.pk}"), 404)


def test_admin_delete_refuses_protected_with_the_reason(staff, snap):
    plain = snapshot_seed("plain", [captured(None, entry(1.0), name="X:1")])
    services.snapshot_labels_set(snapshot_id=str(snap.pk), labels=[GOLDEN], actor="cli:t")
    response = staff.post(
        "/admin/snapshots/snapshot/",
        {"action": "delete_with_values", "_selected_action": [str(snap.pk), str(plain.pk)]},
        follow=True,
    )
    html = response.content.decode()
    assert "Not deleted: Snapshot" in html and "golden snapshots are never deleted" in html
    assert "Deleted 1 snapshot(s)." in html
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [snap.pk]
    assert AuditEvent.objects.get(kind="snapshot.delete").actor == "user:boss"


def test_admin_bulk_labelling(staff, snap):
    other = snapshot_seed("other", [captured(None, entry(1.0), name="X:1")], labels=["old"])
    ids = [str(snap.pk), str(other.pk)]
    page = staff.post(
        "/admin/snapshots/snapshot/", {"action": "label_selected", "_selected_action": ids}
    )
    assert page.status_code == 200 and "Label snapshots" in page.content.decode()
    done = staff.post(
        "/admin/snapshots/snapshot/",
        {
            "action": "label_selected",
            "_selected_action": ids,
            "apply": "1",
            "add": "golden, run-7",
            "remove": "old",
        },  # fmt: skip
        follow=True,
    )
    assert "Labels changed on 2 snapshot(s)." in done.content.decode()
    snap.refresh_from_db()
    other.refresh_from_db()
    assert snap.labels == [GOLDEN, "run-7"] and other.labels == [GOLDEN, "run-7"]
    assert AuditEvent.objects.filter(kind="snapshot.label").count() == 2
    # Golden now: the admin's own delete refuses too.
    staff.post(
        "/admin/snapshots/snapshot/",
        {"action": "delete_with_values", "_selected_action": ids},
    )
    assert Snapshot.objects.count() == 2


def test_admin_change_page_edits_labels(staff, snap):
    url = f"/admin/snapshots/snapshot/{snap.pk}/change/"
    response = staff.post(url, {"title": "t", "description": "d", "labels": "a,b"})
    assert response.status_code == 302
    snap.refresh_from_db()
    assert snap.labels == ["a", "b"]
    assert AuditEvent.objects.get(kind="snapshot.label").actor == "user:boss"

"""Snapshot admin: read-only values, paged on the snapshot page (a superuser's session)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from pvs.models import PV
from snapshots.models import Snapshot, SnapshotValue
from tests.snapshots.factories import captured, entry, snapshot_seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("admin", "a@example.org", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def big_snapshot() -> Snapshot:
    """3K values: PVs 'ADM:0000'..'ADM:2999'."""
    pvs = PV.objects.bulk_create(PV(setpoint_address=f"ADM:{i:04d}") for i in range(3000))
    return snapshot_seed(
        "admin 3K", (captured(pv, entry(float(i))) for i, pv in enumerate(pvs)), live_count=3000
    )


def _value_rows(html: str) -> list[str]:
    return re.findall(r"<tr><td>(ADM:\d{4})</td>", html)


def test_snapshot_changelist_shows_count_and_completeness(staff, big_snapshot):
    html = staff.get("/admin/snapshots/snapshot/").content.decode()
    assert "admin 3K" in html
    assert "3000 / 0 / 0 / 0" in html


def test_snapshot_page_renders_a_page_of_values_and_pages(
    staff, big_snapshot, django_assert_max_num_queries
):
    url = f"/admin/snapshots/snapshot/{big_snapshot.pk}/change/"
    with django_assert_max_num_queries(12):
        response = staff.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert _value_rows(html) == [f"ADM:{i:04d}" for i in range(100)]
    assert "page 1 of 30 (3000 values)" in html
    html = staff.get(url + "?vpage=30").content.decode()
    assert _value_rows(html) == [f"ADM:{i:04d}" for i in range(2900, 3000)]
    assert "previous" in html and "next ›" not in html
    html = staff.get(url + "?vpage=999").content.decode()  # clamped to the last page
    assert "page 30 of 30" in html
    html = staff.get(url + "?vpage=bad").content.decode()
    assert "page 1 of 30" in html
    html = staff.get(url + "?vq=ADM:012").content.decode()
    assert _value_rows(html) == [f"ADM:{i:04d}" for i in range(120, 130)]
    assert "page 1 of 1 (10 values)" in html


def test_snapshot_admin_cannot_add_or_edit_values_but_edits_title(staff, big_snapshot):
    assert staff.get("/admin/snapshots/snapshot/add/").status_code == 403
    assert staff.get("/admin/snapshots/snapshotvalue/").status_code == 404
    url = f"/admin/snapshots/snapshot/{big_snapshot.pk}/change/"
    response = staff.post(url, {"title": "renamed", "description": "d"})
    assert response.status_code == 302
    big_snapshot.refresh_from_db()
    assert (big_snapshot.title, big_snapshot.description) == ("renamed", "d")
    assert SnapshotValue.objects.filter(snapshot=big_snapshot).count() == 3000


def test_snapshot_delete_action_removes_values(staff, big_snapshot):
    other = snapshot_seed("keep", [captured(None, entry(1.0), name="X:1")])
    response = staff.post(
        "/admin/snapshots/snapshot/",
        {"action": "delete_with_values", "_selected_action": [str(big_snapshot.pk)]},
    )
    assert response.status_code == 302
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [other.pk]
    assert not SnapshotValue.objects.filter(snapshot_id=big_snapshot.pk).exists()

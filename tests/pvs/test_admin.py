"""The staff admin of PVs and tags: list pages without N+1, filters, search, bulk actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from pvs.models import PV
from tests.pvs.factories import PVFactory
from tests.tags.factories import TagFactory, TagGroupFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser("admin", "admin@example.org", "pw")
    client.force_login(user)
    return client


def test_pv_changelist_queries_do_not_grow_with_rows(staff_client, django_assert_max_num_queries):
    group = TagGroupFactory(name="Area")
    tags = [TagFactory(group=group) for _ in range(3)]
    for i in range(120):
        PVFactory(tags=tags[: i % 3 + 1])
    with django_assert_max_num_queries(8):
        response = staff_client.get("/admin/pvs/pv/")
    assert response.status_code == 200
    assert response.content.count(b'class="action-select"') == 100  # one page


def test_pv_changelist_search_and_filters(staff_client):
    group = TagGroupFactory(name="Area")
    li22 = TagFactory(group=group, name="LI22")
    PVFactory(setpoint_address="LI22:Q1", tags=[li22])
    PVFactory(setpoint_address="BSY:Q1", description="a li22 neighbour")
    PVFactory(setpoint_address="BSY:Q2", read_only=True)
    body = staff_client.get("/admin/pvs/pv/?q=li22").content.decode()
    assert "LI22:Q1" in body and "BSY:Q1" in body and "BSY:Q2" not in body
    body = staff_client.get(f"/admin/pvs/pv/?tag_group={group.pk}").content.decode()
    assert "LI22:Q1" in body and "BSY:Q1" not in body
    body = staff_client.get(f"/admin/pvs/pv/?tag={li22.pk}").content.decode()
    assert "LI22:Q1" in body and "BSY:Q1" not in body
    body = staff_client.get("/admin/pvs/pv/?read_only__exact=1").content.decode()
    assert "BSY:Q2" in body and "LI22:Q1" not in body


def _action(client, action: str, pvs, **extra):
    data = {"action": action, "_selected_action": [str(p.pk) for p in pvs], **extra}
    return client.post("/admin/pvs/pv/", data, follow=True)


def test_bulk_read_only_actions(staff_client):
    pvs = PVFactory.create_batch(3)
    response = _action(staff_client, "mark_read_only", pvs[:2])
    assert "2 PVs marked read-only." in response.content.decode()
    assert sorted(PV.objects.values_list("read_only", flat=True)) == [False, True, True]
    _action(staff_client, "mark_writable", pvs)
    assert not PV.objects.filter(read_only=True).exists()


def test_bulk_tag_actions(staff_client):
    tag = TagFactory(name="rf")
    pvs = PVFactory.create_batch(3)
    response = _action(staff_client, "add_tag", pvs, tag=str(tag.pk))
    assert "added to 3 PVs" in response.content.decode()
    assert tag.pvs.count() == 3
    _action(staff_client, "remove_tag", pvs[:1], tag=str(tag.pk))
    assert tag.pvs.count() == 2
    response = _action(staff_client, "add_tag", pvs)  # no tag chosen
    assert "Choose a tag" in response.content.decode()
    assert tag.pvs.count() == 2


def test_pv_change_page_uses_tag_autocomplete(staff_client):
    pv = PVFactory(tags=[TagFactory()])
    body = staff_client.get(f"/admin/pvs/pv/{pv.pk}/change/").content.decode()
    assert "admin-autocomplete" in body
    response = staff_client.get(
        "/admin/autocomplete/?app_label=pvs&model_name=pv&field_name=tags&term=tag"
    )
    assert response.status_code == 200 and response.json()["results"]


def test_tag_group_page_has_tag_inline(staff_client):
    group = TagGroupFactory(name="Area")
    TagFactory(group=group, name="LI22")
    assert staff_client.get("/admin/tags/taggroup/").status_code == 200
    body = staff_client.get(f"/admin/tags/taggroup/{group.pk}/change/").content.decode()
    assert "LI22" in body and "tags-TOTAL_FORMS" in body
    assert staff_client.get("/admin/tags/tag/").status_code == 200

"""The live-value pages: served without a build step, guarded like the API."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model


def test_pv_browser_page_renders_with_anonymous_read(client, db):
    response = client.get("/live/pvs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Squirrel.pvBrowser()" in html and 'id="monitor-banner"' in html
    assert "live/live.js" in html


def test_snapshot_page_embeds_the_id_as_json(client, db):
    response = client.get("/live/snapshots/0b6c7c1e-1111-4222-8333-444455556666")
    assert response.status_code == 200
    assert '"0b6c7c1e-1111-4222-8333-444455556666"' in response.content.decode()


@pytest.mark.parametrize("path", ["/live/pvs", "/live/snapshots/x"])
def test_pages_need_staff_login_when_anonymous_access_is_none(client, db, settings, path):
    settings.ANONYMOUS_ACCESS = "none"
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    staff = get_user_model().objects.create_user("op", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(path).status_code == 200


def test_admin_links_to_live_pages(client, db):
    admin = get_user_model().objects.create_superuser("root", password="pw")
    client.force_login(admin)
    html = client.get("/admin/").content.decode()
    assert 'href="/live/pvs"' in html

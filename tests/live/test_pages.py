"""The live-value pages: served without a build step, guarded like the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from pvs.models import PV
from tests.conftest import payload


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


def test_snapshot_page_pages_and_filters_on_the_server(client, db):
    html = client.get("/live/snapshots/0b6c7c1e-1111-4222-8333-444455556666").content.decode()
    for control in ('id="q"', 'id="only-out"', 'id="tag"', 'id="page-size"', 'id="next"'):
        assert control in html
    assert "Squirrel.snapshotLive(" in html


def test_live_script_never_forces_layout_per_cell(client, db):
    """Values are written into text nodes, per animation frame; nothing reads layout."""
    from django.contrib.staticfiles import finders

    path = finders.find("live/live.js")
    assert path
    script = Path(path).read_text()
    for forced in ("offsetWidth", "offsetHeight", "getBoundingClientRect", "getComputedStyle",
                   "scrollHeight", "clientWidth"):  # fmt: skip
        assert forced not in script
    assert "requestAnimationFrame" in script and "createTextNode" in script
    assert "/live-rows?" in script and "If-None-Match" in script
    assert "/v1/pvs/search?" in script  # the PV browser's natural-order query


def test_pv_browser_query_lists_pvs_in_natural_address_order(api, db):
    """``DEV2`` before ``DEV10``; a read-back-only PV sits by the readback address its DTO
    shows as ``setpointAddress``."""
    for name in ("N:DEV10:SP", "N:DEV2:SP", "N:DEV1:SP", "N:dev3:SP"):
        PV.objects.create(setpoint_address=name)
    PV.objects.create(readback_address="N:DEV9:RBV")
    body = payload(api.get("/v1/pvs/search?q=N:&limit=3"))
    names = [r["setpointAddress"] for r in body["results"]]
    assert names == ["N:DEV1:SP", "N:DEV2:SP", "N:dev3:SP"]
    body = payload(api.get("/v1/pvs/search?q=N:&limit=3&offset=3"))
    assert [r["setpointAddress"] for r in body["results"]] == ["N:DEV9:RBV", "N:DEV10:SP"]
    assert body["totalCount"] == 5


def test_natural_order_is_an_index_walk_not_a_sort(db):
    """The ordering expression matches ix_pv_natural_name exactly: with sorting priced out the
    planner still finds a plan without a Sort node (it would have to sort otherwise)."""
    PV.objects.bulk_create([PV(setpoint_address=f"IX:DEV{i}:SP") for i in range(200)])
    sql, params = PV.objects.natural_order()[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "ix_pv_natural_name" in plan and "Sort" not in plan, plan

"""PV services: every branch, with real rows; the catalog version bump after commit."""

from __future__ import annotations

import uuid

import pytest

from monitor.events import catalog_version_key
from pvs import services
from pvs.models import PV
from squirrel.exceptions import Conflict, NotFound
from tests.pvs.factories import PVFactory
from tests.tags.factories import TagFactory

pytestmark = pytest.mark.django_db


def test_create_trims_addresses_and_sets_tags():
    tag = TagFactory()
    pv = services.pv_create(setpoint_address=" A ", config_address="  ", tag_ids=[tag.pk])
    pv.refresh_from_db()
    assert (pv.setpoint_address, pv.config_address) == ("A", None)
    assert list(pv.tags.all()) == [tag]


def test_create_errors_write_nothing():
    with pytest.raises(Conflict, match="At least one address"):
        services.pv_create(setpoint_address=" ", readback_address="")
    with pytest.raises(Conflict, match="tag IDs are invalid"):
        services.pv_create(setpoint_address="A", tag_ids=[uuid.uuid4()])
    assert not PV.objects.exists()


def test_create_many_is_all_or_nothing():
    PVFactory(setpoint_address="OLD")
    items = [services.NewPV(setpoint_address=f"N{i}") for i in range(5)]
    with pytest.raises(Conflict, match="already exist: \\['OLD'\\]"):
        services.pv_create_many(items=[*items, services.NewPV(setpoint_address="OLD")])
    assert PV.objects.count() == 1
    created = services.pv_create_many(items=items)
    assert [p.setpoint_address for p in created] == [f"N{i}" for i in range(5)]
    assert PV.objects.count() == 6


def test_update_none_leaves_fields():
    pv = PVFactory(description="d", rel_tolerance=0.2, read_only=True)
    services.pv_update(pv_id=pv.pk, abs_tolerance=3.0)
    pv.refresh_from_db()
    assert (pv.description, pv.rel_tolerance, pv.read_only, pv.abs_tolerance) == (
        "d",
        0.2,
        True,
        3.0,
    )


def test_get_update_delete_not_found():
    for bad in ("x", uuid.uuid4()):
        with pytest.raises(NotFound):
            services.pv_update(pv_id=bad, description="x")
        with pytest.raises(NotFound):
            services.pv_delete(pv_id=bad)


def test_bulk_read_only_and_tags():
    pvs = PVFactory.create_batch(3)
    ids = [p.pk for p in pvs]
    assert services.pv_set_read_only(pv_ids=ids[:2], read_only=True) == 2
    assert services.pv_set_read_only(pv_ids=ids, read_only=True) == 1
    tag = TagFactory()
    assert services.pv_tag_add(pv_ids=ids[:2], tag=tag) == 2
    assert services.pv_tag_add(pv_ids=ids, tag=tag) == 1
    assert services.pv_tag_remove(pv_ids=ids[:1], tag=tag) == 1
    assert tag.pvs.count() == 2


def test_every_change_bumps_catalog_version(redis_client, django_capture_on_commit_callbacks):
    def bumps(fn) -> int:
        before = int(redis_client.get(catalog_version_key()) or 0)
        with django_capture_on_commit_callbacks(execute=True):
            fn()
        return int(redis_client.get(catalog_version_key()) or 0) - before

    assert bumps(lambda: services.pv_create(setpoint_address="A")) == 1
    pv = PV.objects.get()
    assert bumps(lambda: services.pv_create_many(items=[services.NewPV(readback_address="B")])) == 1
    assert bumps(lambda: services.pv_update(pv_id=pv.pk, description="x")) == 1
    assert bumps(lambda: services.pv_delete(pv_id=pv.pk)) == 1


def test_failed_change_does_not_bump(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Conflict):
        services.pv_create(setpoint_address=" ")
    assert callbacks == []


def test_redis_failure_is_logged_not_raised(settings, caplog, django_capture_on_commit_callbacks):
    from monitor import events

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    events._client.cache_clear()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.pv_create(setpoint_address="A")
    finally:
        events._client.cache_clear()
    assert PV.objects.count() == 1
    assert "could not bump the catalog version" in caplog.text


def test_live_values_error_when_redis_is_down(settings):
    from monitor import events

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    events._client.cache_clear()
    try:
        values, message = services.pv_live_values(addresses=["A", None])
    finally:
        events._client.cache_clear()
    assert values == {} and message.startswith("Failed to get live values")

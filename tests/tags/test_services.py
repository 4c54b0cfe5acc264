"""Tag services: case-insensitive names, bulk creation, name resolution for the importer."""

from __future__ import annotations

import pytest

from squirrel.exceptions import Conflict, NotFound
from tags import services
from tags.models import Tag, TagGroup
from tests.tags.factories import TagFactory, TagGroupFactory

pytestmark = pytest.mark.django_db


def test_group_create_and_case_insensitive_conflict():
    group = services.tag_group_create(name="Area", description=None)
    assert TagGroup.objects.get() == group
    with pytest.raises(Conflict):
        services.tag_group_create(name="area")


def test_group_get_malformed_is_not_found():
    with pytest.raises(NotFound, match="Tag group x not found"):
        services.tag_group_get(group_id="x")


def test_tag_create_skip_duplicates():
    group = TagGroupFactory()
    _, created = services.tag_create(group_id=group.pk, name="a")
    assert created
    _, created = services.tag_create(group_id=group.pk, name="A", skip_duplicates=True)
    assert not created
    with pytest.raises(Conflict):
        services.tag_create(group_id=group.pk, name="A")
    assert Tag.objects.count() == 1


def test_same_tag_name_in_two_groups_is_fine():
    TagFactory(name="a")
    group = TagGroupFactory()
    services.tag_create(group_id=group.pk, name="a")
    assert Tag.objects.filter(name="a").count() == 2


def test_tag_update_wrong_group_is_not_found():
    tag = TagFactory()
    with pytest.raises(NotFound):
        services.tag_update(group_id=TagGroupFactory().pk, tag_id=tag.pk, name="x")


def test_tags_resolve_creates_or_reports():
    group = TagGroupFactory(name="Area")
    tag = TagFactory(group=group, name="LI22")
    ids, missing = services.tags_resolve(names={"area": {"li22", "BSY"}}, create=False)
    assert ids == {("area", "li22"): tag.pk}
    assert missing == ["unknown tag 'BSY' in group 'Area'"]
    ids, missing = services.tags_resolve(names={"area": {"BSY"}, "Kind": {"rf"}}, create=True)
    assert missing == [] and len(ids) == 2
    assert sorted(Tag.objects.values_list("group__name", "name")) == [
        ("Area", "BSY"),
        ("Area", "LI22"),
        ("Kind", "rf"),
    ]

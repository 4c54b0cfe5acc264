"""Factories of the tags app."""

from __future__ import annotations

import factory

from tags.models import Tag, TagGroup


class TagGroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TagGroup

    name = factory.Sequence(lambda n: f"Group {n}")


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag-{n}")
    group = factory.SubFactory(TagGroupFactory)

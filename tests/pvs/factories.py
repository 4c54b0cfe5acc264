"""Factories of the pvs app."""

from __future__ import annotations

import factory

from pvs.models import PV


class PVFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PV
        skip_postgeneration_save = True

    setpoint_address = factory.Sequence(lambda n: f"TEST:PV:{n:05d}")

    @factory.post_generation
    def tags(self, create: bool, extracted: list | None, **kwargs: object) -> None:
        if create and extracted:
            self.tags.set(extracted)

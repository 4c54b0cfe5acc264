"""Which PVs of a snapshot a restore or plan covers, as parsed from request data."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from squirrel.http import invalid


@dataclass(frozen=True)
class Selection:
    """Which PVs of a snapshot: ``pv_ids`` (None = all) and tag filters (OR inside a group,
    AND across groups, as PVQuerySet.with_tag_filters)."""

    pv_ids: tuple[uuid.UUID, ...] | None = None
    tag_filters: tuple[tuple[uuid.UUID, ...], ...] = ()

    @classmethod
    def stored(
        cls, pv_ids: list[uuid.UUID] | None, tag_filters: list[list[str]] | None
    ) -> Selection:
        """The selection as a plan or restore row records it (``pv_ids``, ``tag_filters``)."""
        return cls(
            pv_ids=tuple(pv_ids) if pv_ids is not None else None,
            tag_filters=tuple(tuple(uuid.UUID(t) for t in g) for g in tag_filters or []),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pvIds": None if self.pv_ids is None else sorted(str(p) for p in self.pv_ids),
            "tagFilters": [sorted(str(t) for t in group) for group in self.tag_filters],
        }


def _uuid_list(raw: Any, loc: str) -> tuple[uuid.UUID, ...]:
    if not isinstance(raw, list):
        raise invalid(
            ["body", loc],
            "Must be a list of ids",
            "list_type",
            message=f"Validation error: {loc}: must be a list of ids",
        )
    out = []
    for index, item in enumerate(raw):
        try:
            out.append(uuid.UUID(str(item)))
        except ValueError:
            raise invalid(
                ["body", loc, index],
                "Invalid UUID",
                "uuid_parsing",
                message=f"Validation error: {loc}.{index}: {item!r} is not a valid id",
            ) from None
    return tuple(out)


def selection_parse(*, pv_ids: Any = None, tag_filters: Any = None) -> Selection:
    """A Selection from request data; Invalid (422) on malformed ids.

    ``tag_filters`` is a list of groups (each a list of tag ids) or a mapping of group name to
    tag ids; a flat list of ids is one group.
    """
    ids = None if pv_ids is None else _uuid_list(pv_ids, "pvIds")
    groups: list[tuple[uuid.UUID, ...]] = []
    if tag_filters is not None:
        if isinstance(tag_filters, dict):
            raw_groups = list(tag_filters.values())
        elif isinstance(tag_filters, list) and all(not isinstance(g, list) for g in tag_filters):
            raw_groups = [tag_filters]
        elif isinstance(tag_filters, list):
            raw_groups = tag_filters
        else:
            raise invalid(
                ["body", "tagFilters"],
                "Invalid",
                "list_type",
                message="Validation error: tagFilters: must be a list of lists of tag ids",
            )
        groups = [_uuid_list(g, "tagFilters") for g in raw_groups]
    return Selection(pv_ids=ids, tag_filters=tuple(g for g in groups if g))

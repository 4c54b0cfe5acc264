"""What the bottom layer asks of the layers above it, without importing them (STYLE.md §2).

An API key or a staff user may be limited to restoring some tags; ``squirrel`` stores their ids
but sits below ``tags``. So ``squirrel`` declares the question here and ``tags`` answers it from
its ``AppConfig.ready()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence

from django.core.exceptions import ValidationError

TagIdsFinder = Callable[[Sequence[uuid.UUID]], set[uuid.UUID]]
_tag_ids_finder: list[TagIdsFinder] = []


def tag_ids_finder_set(finder: TagIdsFinder) -> None:
    """Install the function that tells which of some tag ids exist (the tags app's)."""
    _tag_ids_finder[:] = [finder]


def tag_ids_check(ids: Iterable[uuid.UUID] | None, field: str) -> None:
    """ValidationError on ``field`` naming the ids no tag has: a restore limited to a tag that
    does not exist would silently restore nothing of it."""
    wanted = list(dict.fromkeys(ids or ()))
    if not wanted or not _tag_ids_finder:
        return
    found = _tag_ids_finder[0](wanted)
    unknown = [str(i) for i in wanted if i not in found]
    if unknown:
        raise ValidationError({field: f"no tag has the id(s) {', '.join(unknown)}"})

"""What the catalog tells the layers above it, and asks of them, without importing them.

``pvs`` sits below ``monitor`` (STYLE.md §2), yet a catalog change must reach the monitor at once
and a PV's detail may show its cached live values. So ``pvs`` declares the hooks here and
``monitor`` fills them in its ``AppConfig.ready()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.dispatch import Signal

#: Sent (no arguments beyond ``sender``) after a transaction that changed the catalog commits.
catalog_changed = Signal()

LiveValuesReader = Callable[[Sequence[str]], tuple[dict[str, Any], str | None]]
_live_values_reader: list[LiveValuesReader] = []


def live_values_reader_set(reader: LiveValuesReader) -> None:
    """Install the function that reads cached live values (the monitor's cache reader)."""
    _live_values_reader[:] = [reader]


def live_values_read(addresses: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """Wire entries of the cached ``addresses`` and an error text instead when they cannot be
    read; an installation without a cache reader says so in the error."""
    if not _live_values_reader:
        return {}, "Failed to get live values: no live-value cache is installed"
    return _live_values_reader[0](addresses)

"""Shapes of GET /v1/snapshots/{id}/live-rows (our live page's route, not the contract's) and
the one way a value is shown on it.

Saved and live values are shown in the SAME form by ``shown_text``: an enum by its label on
both sides (a stored enum decodes to its label, a cached entry holds it as ``value``), arrays
summarised alike (``[length] first, second, third…``), numbers with the one precision of the
row (the saved metadata's, else the live entry's), so the eye compares like with like.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from snapshots.live_verdicts import DISCONNECTED, EQUAL, NO_LIVE, OUT, Live, Page, SavedRow
from squirrel.api import MAX_QUERY_INT

LIVE_ROWS_DEFAULT_LIMIT = 100
LIVE_ROWS_MAX_LIMIT = 500
_TEXT_MAX = 80
_ARRAY_SHOWN = 3


def shown_text(value: Any, precision: int | None) -> str | None:
    """A value as the live page shows it (module docstring); None when there is none."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        head = ", ".join(shown_text(v, precision) or "—" for v in value[:_ARRAY_SHOWN])
        more = "…" if len(value) > _ARRAY_SHOWN else ""
        return f"[{len(value)}] {head}{more}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value - value != 0.0:
            return None
        if precision is not None and 0 <= precision <= 12:
            return f"{value:.{precision}f}"
        return f"{value:.10g}"
    text = str(value)
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def _saved(present: bool, value: Any, units: str | None, precision: int | None) -> Any:
    if not present:
        return None
    return {"text": shown_text(value, precision), "units": units}


def _live(live: Live | None, precision: int | None) -> Any:
    if live is None:
        return None
    return {
        "text": shown_text(live.value, precision if precision is not None else live.precision),
        "units": live.units,
        "connected": live.connected,
        "severity": live.severity,
        "timestamp": live.timestamp,
    }


def live_row_dto(row: SavedRow, lives: dict[str, Live]) -> dict[str, Any]:
    """LiveRowDTO: a PV's saved and live values, shown alike, and its verdict."""
    sp = lives.get(row.sp_address) if row.sp_address else None
    rb = lives.get(row.rb_address) if row.rb_address else None
    return {
        "pvId": row.pv_id,
        "pvName": row.pv_name,
        "setpointAddress": row.sp_address,
        "readbackAddress": row.rb_address,
        "verdict": row.verdict,
        "savedSetpoint": _saved(row.sp_present, row.sp_value, row.sp_units, row.precision),
        "liveSetpoint": _live(sp, row.precision),
        "savedReadback": _saved(row.rb_present, row.rb_value, row.rb_units, row.precision),
        "liveReadback": _live(rb, row.precision),
    }


def live_rows_dto(
    snapshot_id: str, title: str, page: Page, *, offset: int, limit: int
) -> dict[str, Any]:
    """LiveRowsDTO: one page of rows and the counts of the whole snapshot."""
    counts = page.counts
    return {
        "snapshotId": snapshot_id,
        "title": title,
        "phase": page.phase,
        "monitorAlive": page.monitor_alive,
        "offset": offset,
        "limit": limit,
        "matched": page.matched,
        "counts": None
        if counts is None
        else {
            "total": sum(counts.values()),
            "equal": counts[EQUAL],
            "outOfTolerance": counts[OUT],
            "disconnected": counts[DISCONNECTED],
            "noLiveValue": counts[NO_LIVE],
        },
        "rows": [live_row_dto(r, page.lives) for r in page.rows],
    }


class LiveRowsQuerySerializer(serializers.Serializer):
    """``offset``, ``limit`` (1..500), ``q`` (substring of the name or an address,
    case-insensitive), ``tags`` (tag ids: PVs carrying any). ``onlyOut`` is read by
    ``squirrel.http.query_bool``."""

    offset = serializers.IntegerField(min_value=0, max_value=MAX_QUERY_INT, default=0)
    limit = serializers.IntegerField(
        min_value=1, max_value=LIVE_ROWS_MAX_LIMIT, default=LIVE_ROWS_DEFAULT_LIMIT
    )
    q = serializers.CharField(
        required=False, allow_blank=True, max_length=255, trim_whitespace=True, default=""
    )
    tags = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)


class SavedValueOutSerializer(serializers.Serializer):
    text = serializers.CharField(allow_null=True)
    units = serializers.CharField(allow_null=True)


class LiveValueOutSerializer(SavedValueOutSerializer):
    connected = serializers.BooleanField()
    severity = serializers.IntegerField(allow_null=True)
    timestamp = serializers.FloatField(allow_null=True, help_text="IOC time, epoch seconds")


class LiveRowOutSerializer(serializers.Serializer):
    pvId = serializers.UUIDField(allow_null=True)
    pvName = serializers.CharField()
    setpointAddress = serializers.CharField(allow_null=True)
    readbackAddress = serializers.CharField(allow_null=True)
    verdict = serializers.ChoiceField(choices=[EQUAL, OUT, DISCONNECTED, NO_LIVE])
    savedSetpoint = SavedValueOutSerializer(allow_null=True)
    liveSetpoint = LiveValueOutSerializer(allow_null=True)
    savedReadback = SavedValueOutSerializer(allow_null=True)
    liveReadback = LiveValueOutSerializer(allow_null=True)


class LiveCountsOutSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    equal = serializers.IntegerField()
    outOfTolerance = serializers.IntegerField()
    disconnected = serializers.IntegerField()
    noLiveValue = serializers.IntegerField()


class LiveRowsOutSerializer(serializers.Serializer):
    """LiveRowsDTO; ``counts`` is null and ``rows`` empty while ``phase`` is comparing."""

    snapshotId = serializers.UUIDField()
    title = serializers.CharField()
    phase = serializers.ChoiceField(choices=["comparing", "ready"])
    monitorAlive = serializers.BooleanField()
    offset = serializers.IntegerField()
    limit = serializers.IntegerField()
    matched = serializers.IntegerField(help_text="rows matching q, tags and onlyOut")
    counts = LiveCountsOutSerializer(allow_null=True)
    rows = LiveRowOutSerializer(many=True)

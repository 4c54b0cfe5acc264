"""Request shapes of the live-value routes, for the API schema.

POST /v1/pvs/live is polled with thousands of names every 2 s, so the view checks this shape
by hand (live.views._names) instead of running a field per name; this serializer documents
the same rule.
"""

from __future__ import annotations

from rest_framework import serializers


class LiveRequestSerializer(serializers.Serializer):
    """``{"pv_names": [address, ...]}``: exact address strings, untrimmed."""

    pv_names = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=True)
    )


class TestEpicsQuerySerializer(serializers.Serializer):
    """``pv``: the address to read (absent or blank: the contract's default PV)."""

    pv = serializers.CharField(
        required=False, allow_blank=True, max_length=255, trim_whitespace=False
    )

from django.apps import AppConfig


class LiveConfig(AppConfig):
    """The live web half: WebSocket consumer and fan-out, live and health HTTP views, live pages.

    It sits on top of the app ladder (STYLE.md §2) because it subscribes by snapshot and
    compares against live values, so it imports ``snapshots`` as well as ``monitor``."""

    name = "live"

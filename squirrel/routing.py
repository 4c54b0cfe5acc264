"""WebSocket routes gathered from the apps."""

from live.routing import websocket_urlpatterns

__all__ = ["websocket_urlpatterns"]

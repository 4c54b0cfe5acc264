"""WebSocket routes gathered from the apps."""

from monitor.routing import websocket_urlpatterns

__all__ = ["websocket_urlpatterns"]

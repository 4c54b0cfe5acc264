"""WebSocket routes of the monitor app (contract §4.1)."""

websocket_urlpatterns: list = []

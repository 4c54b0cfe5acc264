"""WebSocket routes of the live app (contract §4.1)."""

from django.urls import path

from live.consumers import LiveValuesConsumer

websocket_urlpatterns = [
    path("v1/ws/pvs", LiveValuesConsumer.as_asgi()),
    path("v1/ws/live", LiveValuesConsumer.as_asgi()),
]

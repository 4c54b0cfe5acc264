"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "squirrel.settings")
django_asgi_app = get_asgi_application()
# Everything loaded so far lives for the process: keep it out of the collector's scans
# (halves GC pauses while serving 1000-row pages).
gc.freeze()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from squirrel import limits  # noqa: E402
from squirrel.routing import websocket_urlpatterns  # noqa: E402

# daphne reads whole bodies before calling any app: bound them in daphne itself (limits, 1).
limits.install()

application = ProtocolTypeRouter(
    {
        "http": limits.BodyLimit(django_asgi_app),
        # the session cookie: staff users' sockets (live.consumers; squirrel.auth's rules)
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)

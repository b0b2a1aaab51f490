from __future__ import annotations

from channels.routing import URLRouter
from django.urls import re_path

from chat.consumers import ChatConsumer, NotificationConsumer
from middleware.closing import refuse_handshake

websocket_urlpatterns = [
    # Any room text reaches the consumer, which closes 4400 when it breaks the pattern.
    re_path(r"^ws/chat/(?P<room>[^/]*)/$", ChatConsumer.as_asgi()),
    re_path(r"^ws/notifications/$", NotificationConsumer.as_asgi()),
    re_path(r"", refuse_handshake),  # type: ignore[arg-type]
]

websocket_application = URLRouter(websocket_urlpatterns)

"""ASGI entry point: `uvicorn config.asgi:application` serves one pod, with no side effects."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter  # noqa: E402

from chat.routing import websocket_application  # noqa: E402
from infra.logging import install_server_log_redaction  # noqa: E402
from middleware.probes import ProbesMiddleware  # noqa: E402
from middleware.request_id import RequestIdMiddleware  # noqa: E402
from middleware.stack import websocket_stack  # noqa: E402
from middleware.upload_limit import UploadLimitMiddleware  # noqa: E402

install_server_log_redaction()

# Django, DRF and friends leave some hundred thousand long-lived objects behind at import;
# a full collection walks them all and stalls the event loop (p99 spikes in bench/).
# Freeze them out of the collector, and make the full collections that walk every socket's
# objects rare (measured: 150-260 ms each with 2000 sockets open); the young generations
# still run often and cheaply, and reference counting frees almost everything anyway.
gc.collect()
gc.freeze()
gc.set_threshold(5_000, 20, 1_000)

application = ProbesMiddleware(
    RequestIdMiddleware(
        ProtocolTypeRouter(
            {
                # Before Django reads a body: a too-large upload is refused unread.
                "http": UploadLimitMiddleware(django_http),  # type: ignore[arg-type]
                "websocket": websocket_stack(websocket_application),
            }
        )
    )
)

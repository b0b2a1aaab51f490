"""`manage.py webhook_worker [worker options]`: a Procrastinate worker that also serves its own
Prometheus metrics (delivery attempts by outcome) on WEBHOOK_WORKER_METRICS_PORT.

The same as `manage.py procrastinate worker [options]` (every option of it), plus the metrics
endpoint: the counts live in the worker process, so a pod's `/metrics` cannot show them.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from procrastinate.contrib.django.management.commands.procrastinate import (
    Command as ProcrastinateCommand,
)
from prometheus_client import start_http_server

from infra.metrics import REGISTRY


class Command(ProcrastinateCommand):
    help = "Run a webhook delivery worker (Procrastinate) with a /metrics endpoint"

    def run_from_argv(self, argv: list[str]) -> None:
        # `webhook_worker --concurrency 20` is `procrastinate worker --concurrency 20`.
        super().run_from_argv([*argv[:2], "worker", *argv[2:]])

    def handle(self, *args: Any, **kwargs: Any) -> None:
        port = settings.WEBHOOK_WORKER_METRICS_PORT
        if port:
            start_http_server(port, addr=settings.WEBHOOK_WORKER_METRICS_ADDR, registry=REGISTRY)
        super().handle(*args, **kwargs)

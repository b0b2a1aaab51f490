"""`make run`'s bootstrap: platform tenant, demo tenant `acme`, users, printed credentials."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand

from tenants.services import tenant_ensure, user_ensure

DEMO_USERS = {"alice": "alice-password", "bob": "bob-password"}


class Command(BaseCommand):
    help = "Ensure the public tenant, the demo tenant acme (acme.localhost) and demo users exist."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--domain-suffix", default="localhost")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        suffix = options["domain_suffix"]
        tenant_ensure(schema_name="public", name="Platform", domain=suffix)
        user_ensure(
            schema_name="public",
            username=settings.PLATFORM_ADMIN_USER,
            password=settings.PLATFORM_ADMIN_PASSWORD,
            is_admin=True,
        )
        tenant_ensure(schema_name="acme", name="Acme", domain=f"acme.{suffix}")
        for username, password in DEMO_USERS.items():
            user_ensure(
                schema_name="acme",
                username=username,
                password=password,
                is_admin=username == "alice",
            )
        port = os.environ.get("PORT", "8000")
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "tenantchat is ready",
                    f"  demo chat:     http://acme.{suffix}:{port}/",
                    "                 sign in as alice / alice-password in one window,"
                    " bob / bob-password in another",
                    f"  platform API:  http://{suffix}:{port}/api/   "
                    f"(admin {settings.PLATFORM_ADMIN_USER} / {settings.PLATFORM_ADMIN_PASSWORD})",
                    f"  platform home: http://{suffix}:{port}/   (links the operator API docs)",
                    f"  tenant acme:   http://acme.{suffix}:{port}/api/   "
                    "(alice / alice-password, tenant admin; bob / bob-password)",
                    f"  WebSocket:     ws://acme.{suffix}:{port}/ws/chat/general/?token=<access>",
                    f"  API docs:      http://acme.{suffix}:{port}/api/docs/",
                    f"  probes:        http://127.0.0.1:{port}/healthz  /readyz",
                    "",
                    "A webhook to try (a worker delivers it; README, Tenant integration):",
                    "  python3 -m http.server 9000   # logs each POST (answers 501: retries show)",
                    f"  curl -s -H 'Host: acme.{suffix}' -H 'Authorization: Bearer <alice access>' "
                    "-H 'Content-Type: application/json' "
                    """-d '{"url": "http://127.0.0.1:9000/hook", "events": ["*"]}' """
                    f"http://127.0.0.1:{port}/api/webhooks/",
                    "",
                ]
            )
        )

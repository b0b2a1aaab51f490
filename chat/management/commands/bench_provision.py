"""`manage.py bench_provision`: the load generator's tenant, users and access tokens.

Creates (or reuses) a tenant and N users in its schema in one `bulk_create` with a single
password hash computed once, then writes a JSON file of long-lived (1 day) access tokens:
`{"domain": ..., "schema": ..., "users": [{"username": ..., "access": ...}, ...]}`.
Used by `bench/run.py` (`make bench`); never by the server itself.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from accounts.serializers import TenantTokenObtainPairSerializer
from tenants.context import run_in_schema
from tenants.services import tenant_ensure


class Command(BaseCommand):
    help = "Provision the benchmark tenant and its users; write their access tokens as JSON."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--tenant", default="bench", help="schema name (default: bench)")
        parser.add_argument("--domain", default="bench.localhost")
        parser.add_argument("--users", type=int, default=400)
        parser.add_argument("--prefix", default="bench", help="usernames: <prefix>0000, ...")
        parser.add_argument("--tokens-out", required=True, help="where to write the JSON")
        parser.add_argument(
            "--reset-chat",
            action="store_true",
            help="empty the tenant's rooms and messages first (TRUNCATE ... CASCADE)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        schema = options["tenant"]
        if schema == "public":
            raise CommandError("the benchmark tenant cannot be the public schema")
        count = options["users"]
        if count < 1:
            raise CommandError("--users must be at least 1")
        tenant_ensure(schema_name=schema, name=f"Benchmark {schema}", domain=options["domain"])
        # A tenant made by an earlier run may predate newer migrations: bring it up to date.
        call_command("migrate_schemas", schema_name=schema, interactive=False, verbosity=0)
        names = [f"{options['prefix']}{i:04d}" for i in range(count)]

        def provision() -> list[dict[str, str]]:
            user_model = get_user_model()
            with transaction.atomic():
                if options["reset_chat"]:
                    with connection.cursor() as cursor:
                        cursor.execute("TRUNCATE chat_message, chat_room RESTART IDENTITY CASCADE")
                existing = set(
                    user_model.objects.filter(username__in=names).values_list("username", flat=True)
                )
                missing = [n for n in names if n not in existing]
                if missing:
                    password = make_password(None)  # one unusable hash for all: tokens only
                    user_model.objects.bulk_create(
                        [
                            user_model(username=n, password=password, is_active=True)
                            for n in missing
                        ],
                        batch_size=1000,
                    )
                user_model.objects.filter(username__in=names, is_active=False).update(
                    is_active=True
                )
                users = {u.username: u for u in user_model.objects.filter(username__in=names)}
                out = []
                for name in names:
                    token = TenantTokenObtainPairSerializer.get_token(users[name]).access_token
                    token.set_exp(lifetime=timedelta(days=1))
                    out.append({"username": name, "access": str(token)})
                return out

        users = run_in_schema(schema, provision)
        path = Path(options["tokens_out"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"domain": options["domain"], "schema": schema, "users": users}) + "\n"
        )
        self.stdout.write(
            f"bench tenant {schema} ({options['domain']}): {len(users)} tokens -> {path}"
        )

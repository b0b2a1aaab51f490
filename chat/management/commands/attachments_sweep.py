"""`manage.py attachments_sweep [--hours 24] [--schema NAME]`: remove uploads that were never
attached to a message, older than `--hours`, in every tenant (or one): rows, then files.
Meant for a periodic job (cron, a Kubernetes CronJob); safe to run on several hosts at once
(rows being swept elsewhere are skipped)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from chat.attachments import attachments_sweep
from tenants.context import run_in_schema
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Remove attachments never linked to a message and older than --hours (default 24)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--hours", type=float, default=24.0)
        parser.add_argument("--schema", help="only this tenant's schema")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if options["hours"] < 0:
            raise CommandError("--hours must not be negative.")
        older_than = timedelta(hours=options["hours"])
        schemas = Tenant.objects.exclude(schema_name="public").order_by("schema_name")
        if options["schema"]:
            schemas = schemas.filter(schema_name=options["schema"])
        total = 0
        for schema_name in schemas.values_list("schema_name", flat=True):
            removed = run_in_schema(schema_name, attachments_sweep, older_than=older_than)
            if removed:
                self.stdout.write(f"{schema_name}: {removed} removed")
            total += removed
        self.stdout.write(f"{total} unlinked attachments removed")

"""`manage.py attachments_sweep [--hours 24] [--schema NAME]`: remove uploads that were never
attached to a message, older than `--hours`, in every tenant (or one): rows, then files.
The worker processes run the same sweep every hour (`chat.sweep_attachments`); safe to run
on several hosts at once (rows being swept elsewhere are skipped)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from chat.attachments import sweep_tenants


class Command(BaseCommand):
    help = "Remove attachments never linked to a message and older than --hours (default 24)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--hours", type=float, default=24.0)
        parser.add_argument("--schema", help="only this tenant's schema")

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        if options["hours"] < 0:
            raise CommandError("--hours must not be negative.")
        older_than = timedelta(hours=options["hours"])
        removed = sweep_tenants(older_than=older_than, schema_name=options["schema"])
        for schema_name, count in removed.items():
            if count:
                self.stdout.write(f"{schema_name}: {count} removed")
        self.stdout.write(f"{sum(removed.values())} unlinked attachments removed")

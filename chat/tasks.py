"""Procrastinate tasks of the chat app (autodiscovered by procrastinate.contrib.django; run by
the worker processes, `manage.py webhook_worker`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django_tenants.utils import get_public_schema_name
from procrastinate.contrib.django import app

from chat.attachments import attachments_sweep
from tenants.context import in_schema
from tenants.selectors import tenant_schema_names

logger = logging.getLogger(__name__)


@app.periodic(cron="41 * * * *")
@app.task(name="chat.sweep_attachments", queueing_lock="sweep_attachments")
async def sweep_attachments(timestamp: int) -> int:
    """Every hour: uploads never attached to a message, older than ATTACHMENT_UNLINKED_HOURS,
    go in every tenant (rows, then their files). One run at a time across all workers. The
    queries run on the process's database threads (`in_schema`), never on a thread of their
    own whose pooled connection would outlive it."""
    older_than = timedelta(hours=settings.ATTACHMENT_UNLINKED_HOURS)
    total = 0
    for schema_name in await in_schema(get_public_schema_name(), tenant_schema_names):
        total += await in_schema(schema_name, attachments_sweep, older_than=older_than)
    if total:
        logger.info("removed %d unlinked attachments", total)
    return total

"""Per-tenant attachment quota: the tenant's own limit and the counter of its stored bytes,
counted once from the attachments that exist already (chat/attachments.py keeps it after)."""

from typing import Any

from django.db import migrations, models


def count_existing_attachments(apps: Any, schema_editor: Any) -> None:
    """Each tenant's counter = the sizes of its attachment rows (a schema migrated before the
    chat app had attachments has none)."""
    Tenant = apps.get_model("tenants", "Tenant")
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        for tenant in Tenant.objects.exclude(schema_name="public"):
            table = f"{quote(tenant.schema_name)}.{quote('chat_attachment')}"
            cursor.execute("SELECT to_regclass(%s)", [table])
            if cursor.fetchone()[0] is None:
                continue
            cursor.execute(f"SELECT COALESCE(SUM(size), 0) FROM {table}")
            used = int(cursor.fetchone()[0])
            Tenant.objects.filter(pk=tenant.pk).update(attachment_bytes_used=used)


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="attachment_bytes_used",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="tenant",
            name="attachment_quota_bytes",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(count_existing_attachments, migrations.RunPython.noop),
    ]

"""Full-text search of messages (PROTOCOL.md section 6): a stored tsvector column and its index.

`search_vector` is a generated column: PostgreSQL computes `to_tsvector('simple', body)` in
the statement that inserts or edits the row, so an edit re-indexes itself and no code path
can forget to. 'simple' only lowercases (no stemming, no stop words): tenants write in many
languages, and prefix matching of every query word (`deploy:*`, chat/search.py) finds what
English stemming would, in any language.

It is a column of the table only, not a field of the `Message` model: a `GeneratedField`
is `db_returning` and part of every SELECT of the model, so every send's INSERT would read
back the vector and every history page, replay and fan-out repair would carry one per
message (about the size of the body again) that no one uses. chat/search.py names the
column in its query instead. The GIN index is partial: deleted messages are never found,
so they take no room in it (the search query repeats `deleted_at IS NULL` to use it).

`fastupdate = off`: with GIN's default pending list, new rows wait in an unsorted list (up to
`gin_pending_list_limit`, 4 MB) that every search reads in full and that the planner prices
so high it scans the table instead; and the INSERT that fills the list flushes all of it, a
send's latency spike. Off, every message goes into the index as it is stored: 75 us an
INSERT here instead of 29 us without the index (38 us with the pending list, flushes aside).

Adding a generated column rewrites the table under an ACCESS EXCLUSIVE lock, and building
the index blocks writes: on the bench's tenant of 1,000,000 messages (bench/search.py) that
was 8.8 s for the column and 6.0 s for the index here, so a large tenant's sends wait about
15 s while this runs. Names are schema-qualified like migration 0002's; django-tenants runs
this once per tenant schema.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def _schema(schema_editor: BaseDatabaseSchemaEditor) -> str:
    name = schema_editor.connection.schema_name
    return '"' + name.replace('"', '""') + '"'


def add_search(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    schema = _schema(schema_editor)
    schema_editor.execute(
        f"""
        ALTER TABLE {schema}.chat_message ADD COLUMN search_vector tsvector
        GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED
        """
    )
    schema_editor.execute(
        f"""
        CREATE INDEX chat_message_search_gin ON {schema}.chat_message
        USING gin (search_vector) WITH (fastupdate = off) WHERE deleted_at IS NULL
        """
    )


def drop_search(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    schema = _schema(schema_editor)
    schema_editor.execute(f"DROP INDEX IF EXISTS {schema}.chat_message_search_gin")
    schema_editor.execute(f"ALTER TABLE {schema}.chat_message DROP COLUMN IF EXISTS search_vector")


class Migration(migrations.Migration):
    dependencies = [("chat", "0004_attachments")]

    operations = [migrations.RunPython(add_search, drop_search)]

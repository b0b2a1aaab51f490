"""Gap-free per-room `seq`, assigned inside the INSERT that stores the message.

A BEFORE INSERT trigger increments the room's `last_seq` and copies it into the new row.
The increment takes the room row's lock, so concurrent writers from any number of server
processes are serialised per room; if the INSERT fails (duplicate `client_id`), the whole
statement, the increment included, rolls back, so no number is ever skipped. Names are
schema-qualified so the function can never touch another tenant's table.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps


def _schema(schema_editor: BaseDatabaseSchemaEditor) -> str:
    name = schema_editor.connection.schema_name
    return '"' + name.replace('"', '""') + '"'


def create_trigger(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    schema = _schema(schema_editor)
    schema_editor.execute(
        f"""
        CREATE OR REPLACE FUNCTION {schema}.chat_message_assign_seq() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE {schema}.chat_room SET last_seq = last_seq + 1
             WHERE id = NEW.room_id RETURNING last_seq INTO NEW.seq;
            IF NEW.seq IS NULL THEN
                RAISE foreign_key_violation USING MESSAGE = 'room does not exist';
            END IF;
            RETURN NEW;
        END $$;
        """
    )
    schema_editor.execute(
        f"""
        CREATE TRIGGER chat_message_assign_seq BEFORE INSERT ON {schema}.chat_message
        FOR EACH ROW EXECUTE FUNCTION {schema}.chat_message_assign_seq();
        """
    )


def drop_trigger(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    schema = _schema(schema_editor)
    schema_editor.execute(
        f"DROP TRIGGER IF EXISTS chat_message_assign_seq ON {schema}.chat_message"
    )
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {schema}.chat_message_assign_seq()")


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]

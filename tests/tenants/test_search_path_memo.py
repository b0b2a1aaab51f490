"""The connection's search_path memo (`tenants/backend/base.py`) after a savepoint rollback.

`ROLLBACK TO SAVEPOINT` puts the search_path back to what it was when the savepoint was
taken. The memo must then be forgotten, or a later switch to the tenant it names skips the
`SET search_path` and runs that tenant's queries in whatever schema the rollback left.
`transaction.atomic` always releases the savepoint after rolling back to it, and that
RELEASE sets the path again; a savepoint taken and rolled back by hand has no such second
chance, so these tests use the manual savepoint API (`transaction.savepoint`).
"""

from __future__ import annotations

from django.db import transaction

from chat.models import Room
from tenants.context import connection, run_in_schema
from tests.conftest import TenantInfo, unique


def schema_and_room(slug: str) -> tuple[str, bool]:
    """Which schema the queries really run in, and whether `slug` is a room there."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        row = cursor.fetchone()
    assert row is not None
    return str(row[0]), Room.objects.filter(slug=slug).exists()


def test_switch_after_a_savepoint_rollback_queries_the_tenant_it_names(
    tenant_a: TenantInfo, tenant_b: TenantInfo
) -> None:
    only_in_a = unique("memo-a-")
    only_in_b = unique("memo-b-")
    run_in_schema(tenant_a.schema_name, Room.objects.create, slug=only_in_a)
    run_in_schema(tenant_b.schema_name, Room.objects.create, slug=only_in_b)

    with transaction.atomic():
        # The savepoint is taken with the connection on B ...
        sid = run_in_schema(tenant_b.schema_name, transaction.savepoint)

        def query_then_roll_back() -> tuple[str, bool]:
            seen = schema_and_room(only_in_a)  # ... A's SET comes after it ...
            transaction.savepoint_rollback(sid)  # ... so this puts the path back on B.
            return seen

        assert run_in_schema(tenant_a.schema_name, query_then_roll_back) == (
            tenant_a.schema_name,
            True,
        )
        assert run_in_schema(tenant_a.schema_name, schema_and_room, only_in_a) == (
            tenant_a.schema_name,
            True,
        )
        assert run_in_schema(tenant_b.schema_name, schema_and_room, only_in_b) == (
            tenant_b.schema_name,
            True,
        )
        assert run_in_schema(tenant_a.schema_name, schema_and_room, only_in_a) == (
            tenant_a.schema_name,
            True,
        )

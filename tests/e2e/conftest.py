"""Fixtures of the fault tests: a PostgreSQL of the test's own that it may stop and start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_cluster import PostgresCluster, remove_cluster, start_cluster


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A running cluster on a free port with an empty `tenantchat` database (seed it with
    `tests.pg_cluster.seed_cluster`); removed, stopped or not, when the test ends."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)

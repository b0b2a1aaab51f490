"""A PostgreSQL cluster of a test's own, for fault tests that stop and start the database.

The machine's PostgreSQL (5432) is shared and must never be stopped; a test that needs the
database to go away runs `initdb` into a temporary directory and serves it on a free port.
PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
`postgres` OS user (`runuser`); otherwise to the current user.

`seed_cluster` migrates the cluster's public schema and creates one tenant with users in a
subprocess with the server's environment (`server_env(DATABASE_URL=...)`), so the tokens it
prints are signed exactly as the server will check them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import ROOT, TenantInfo, free_port, server_env, unique

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PostgresCluster:
    """`initdb`'d into `data_dir`, served on 127.0.0.1:`port` (trust auth, user postgres)."""

    data_dir: Path
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/tenantchat"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data_dir} -c fsync=off -c max_connections=100"
        )
        self._pg_ctl("-l", str(self.log_path), "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (clients are disconnected) or `immediate` (a crash)."""
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")

    def is_running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False


def start_cluster() -> PostgresCluster:
    """A new, running cluster with an empty `tenantchat` database."""
    base = Path(tempfile.mkdtemp(prefix="tc-pg-"))
    data_dir = base / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data_dir, "postgres")
    subprocess.run(
        _as_owner([str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust"]),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    log_path = base / "postgres.log"
    log_path.touch()
    if os.geteuid() == 0:
        shutil.chown(log_path, "postgres")
    cluster = PostgresCluster(data_dir=data_dir, port=free_port(), log_path=log_path)
    cluster.start()
    admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE tenantchat")
    return cluster


def remove_cluster(cluster: PostgresCluster) -> None:
    if cluster.is_running():
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.stop("immediate")
    shutil.rmtree(cluster.data_dir.parent, ignore_errors=True)


_SEED = """
import django
django.setup()
import json, sys
from django.contrib.auth import get_user_model
from accounts.serializers import TenantTokenObtainPairSerializer
from tenants.context import run_in_schema
from tenants.services import tenant_ensure

schema, domain, names = sys.argv[1], sys.argv[2], sys.argv[3:]
tenant = tenant_ensure(schema_name=schema, name=schema.title(), domain=domain, verbosity=0)

def create():
    users = []
    for name in names:
        user = get_user_model().objects.create_user(username=name, password="pw-" + name)
        refresh = TenantTokenObtainPairSerializer.get_token(user)
        users.append({"id": user.pk, "username": name, "access": str(refresh.access_token)})
    return users

print(json.dumps({"pk": tenant.pk, "users": run_in_schema(schema, create)}))
"""


def seed_cluster(
    cluster: PostgresCluster, *usernames: str
) -> tuple[TenantInfo, list[dict[str, Any]]]:
    """Migrate the cluster, create a tenant and `usernames` in it; returns the tenant and,
    per user, `{id, username, access}` (a valid access token)."""
    env = server_env(DATABASE_URL=cluster.url)
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "migrate_schemas", "--shared", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    schema = unique("pgdown_")
    domain = f"{schema.replace('_', '-')}.localhost"
    done = subprocess.run(
        [sys.executable, "-c", _SEED, schema, domain, *usernames],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seeded = json.loads(done.stdout.strip().splitlines()[-1])
    return TenantInfo(schema_name=schema, domain=domain, pk=seeded["pk"]), seeded["users"]

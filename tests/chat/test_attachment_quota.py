"""The per-tenant storage quota of attachments (PROTOCOL.md section 6), over real uvicorn
processes: an upload that would pass it is a 413 naming `file` and leaves no row and no file;
deleting a message or a room and the sweep of unlinked uploads give the space back; the
quota is the tenant's own when the platform API set one; and uploads racing on two servers
never pass it together, however many at once.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_helpers import PLATFORM_HOST, http, login, make_platform_user, open_room_socket
from tests.chat.test_api import api, create_room
from tests.chat.test_attachments import PNG, rows, stored_files, upload, uploaded
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    start_pods,
    stop_pods,
    tokens_for,
)
from tests.support import TIMEOUT, ws_receive_type

FILE = PNG + b"\0" * (1000 - len(PNG))  # 1000 bytes, a PNG by its signature
SIZE = len(FILE)
# Budgets out of the way: these tests upload much and create a room per round.
SERVER_ENV = {
    "CHAT_RATE_BURST": "1000",
    "CHAT_RATE_PER_SECOND": "100",
    "ROOM_CREATE_RATE": "1000/min",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quota-data")


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    """Two server processes (two pods) on one DATA_DIR, as compose runs its replicas."""
    tmp = tmp_path_factory.mktemp("quota-server")
    started = start_pods(tmp, 2, DATA_DIR=str(data_dir), **SERVER_ENV)
    yield started
    stop_pods(started)


@pytest.fixture(scope="module")
def tenant(make_tenant: Any) -> TenantInfo:
    """A tenant of its own: its counter starts at 0 and no other test uploads into it."""
    return make_tenant()


@pytest.fixture(scope="module")
def operator_token(servers: list[LiveServer], django_db_blocker: Any) -> str:
    with django_db_blocker.unblock():
        operator = make_platform_user(is_admin=True)
    response = login(servers[0], PLATFORM_HOST, operator.username, operator.password)
    assert response.status_code == 200, response.text
    return str(response.json()["access"])


def platform_tenant(server: LiveServer, token: str, tenant: TenantInfo, **change: Any) -> Any:
    """PATCH the tenant on the platform API when `change` is given, else GET it."""
    with http(server, PLATFORM_HOST, token) as client:
        path = f"/api/tenants/{tenant.schema_name}/"
        response = client.patch(path, json=change) if change else client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def set_quota(server: LiveServer, token: str, tenant: TenantInfo, files: int | None) -> None:
    """The tenant's quota: room for `files` more FILEs than it stores now (None: default)."""
    used = platform_tenant(server, token, tenant)["attachment_bytes_used"]
    quota = None if files is None else used + files * SIZE
    assert (
        platform_tenant(server, token, tenant, attachment_quota_bytes=quota)[
            "attachment_quota_bytes"
        ]
        == quota
    )


def stored_bytes(tenant: TenantInfo) -> tuple[int, int]:
    """(the tenant's counter, the sizes of its attachment rows)."""
    from django.db.models import Sum

    from chat.models import Attachment
    from tenants.context import run_in_schema
    from tenants.models import Tenant

    def read() -> tuple[int, int]:
        used = Tenant.objects.get(schema_name=tenant.schema_name).attachment_bytes_used
        return used, Attachment.objects.aggregate(total=Sum("size"))["total"] or 0

    return blocking(lambda: run_in_schema(tenant.schema_name, read))


def tenant_files(data_dir: Path, tenant: TenantInfo) -> set[str]:
    return {key for key in stored_files(data_dir) if key.startswith(f"{tenant.schema_name}/")}


@pytest.fixture
def admin(tenant: TenantInfo, make_user: Any) -> UserInfo:
    return make_user(tenant, is_admin=True)


def test_an_upload_past_the_quota_is_413_naming_file_and_keeps_no_row_nor_file(
    servers, operator_token, data_dir, tenant, admin
):
    server = servers[0]
    set_quota(server, operator_token, tenant, 2)
    with api(server, admin) as client:
        slug = create_room(client)
        kept = [uploaded(client, slug, FILE) for _ in range(2)]
        files_before, rows_before = tenant_files(data_dir, tenant), rows(tenant)
        refused = upload(client, slug, FILE)
        small = upload(client, slug, b"x")  # one byte over is over too
    assert refused.status_code == small.status_code == 413
    assert set(refused.json()) == {"file"} and refused.json()["file"], refused.text
    assert tenant_files(data_dir, tenant) == files_before
    assert rows(tenant) == rows_before
    used, total = stored_bytes(tenant)
    assert used == total
    assert platform_tenant(server, operator_token, tenant)["attachment_bytes_used"] == used
    assert {body["size"] for body in kept} == {SIZE}


def test_a_quota_of_zero_refuses_every_upload_and_null_restores_the_default(
    servers, operator_token, tenant, admin
):
    server = servers[1]
    assert (
        platform_tenant(server, operator_token, tenant, attachment_quota_bytes=0)[
            "attachment_quota_bytes"
        ]
        == 0
    )
    with api(server, admin) as client:
        slug = create_room(client)
        assert upload(client, slug, b"x").status_code == 413
        set_quota(server, operator_token, tenant, None)  # back to 1 GiB
        assert upload(client, slug, FILE).status_code == 201


async def test_deleting_a_message_or_a_room_and_the_sweep_give_the_space_back(
    servers, operator_token, data_dir, tenant, admin
):
    server = servers[0]
    set_quota(server, operator_token, tenant, 3)
    with api(server, admin) as client:
        slug = create_room(client)
        in_message, in_room, unlinked = (uploaded(client, slug, FILE) for _ in range(3))
        frame = client.post(
            f"/api/rooms/{slug}/messages/",
            json={"message": "x", "attachments": [in_message["id"]]},
        ).json()
        assert upload(client, slug, FILE).status_code == 413

        ws = await open_room_socket(server, admin, slug)
        try:
            await ws.send(json.dumps({"type": "delete", "id": frame["id"]}))
            await ws_receive_type(ws, "chat.message.deleted")
        finally:
            await ws.close()
        assert upload(client, slug, FILE).status_code == 201  # the message's bytes are back
        assert upload(client, slug, FILE).status_code == 413

        other = create_room(client)
        assert client.delete(f"/api/rooms/{slug}/").status_code == 204  # in_room, unlinked, +1
        again = [upload(client, other, FILE).status_code for _ in range(4)]
        assert again == [201, 201, 201, 413]
    assert rows(tenant, pk__in=[in_message["id"], in_room["id"], unlinked["id"]]) == []

    # The sweep of unlinked uploads: make the three of `other` old, then sweep.
    from django.utils import timezone

    from chat.attachments import sweep_tenants
    from chat.models import Attachment
    from tenants.context import run_in_schema

    blocking(
        lambda: run_in_schema(
            tenant.schema_name,
            lambda: Attachment.objects.filter(room__slug=other).update(
                created_at=timezone.now() - timedelta(days=2)
            ),
        )
    )
    swept = blocking(
        lambda: sweep_tenants(older_than=timedelta(hours=24), schema_name=tenant.schema_name)
    )
    assert swept == {tenant.schema_name: 3}
    with api(server, admin) as client:
        assert [upload(client, other, FILE).status_code for _ in range(4)] == [201, 201, 201, 413]
    used, total = stored_bytes(tenant)
    assert used == total


def test_the_sweep_recounts_a_counter_that_drifted(tenant):
    from chat.attachments import sweep_tenants
    from tenants.models import Tenant

    blocking(
        lambda: Tenant.objects.filter(schema_name=tenant.schema_name).update(
            attachment_bytes_used=123_456_789
        )
    )
    blocking(lambda: sweep_tenants(older_than=timedelta(hours=24), schema_name=tenant.schema_name))
    used, total = stored_bytes(tenant)
    assert used == total != 123_456_789


@pytest.mark.parametrize("round_", range(5))
def test_twenty_uploads_racing_on_two_servers_keep_exactly_to_the_quota(
    servers, operator_token, data_dir, tenant, admin, round_
):
    """Room for 5 files, 20 uploads at once spread over two processes: exactly 5 are
    accepted, the counter is the sum of the kept rows, and only their files are on disk."""
    set_quota(servers[0], operator_token, tenant, 5)
    with api(servers[0], admin) as client:
        slug = create_room(client)
    files_before = tenant_files(data_dir, tenant)
    token = tokens_for(admin)["access"]
    order = list(range(20))
    random.shuffle(order)

    def send(n: int) -> tuple[int, Any]:
        server = servers[n % 2]
        headers = {"Host": tenant.domain, "Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=TIMEOUT) as c:
            content = FILE[:-2] + bytes([round_, n])
            response = c.post(
                f"/api/rooms/{slug}/attachments/",
                files={"file": (f"f{n}.png", io.BytesIO(content), "image/png")},
            )
            return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, order))
    codes = sorted(code for code, _ in answers)
    assert codes == [201] * 5 + [413] * 15, codes
    accepted = {body["id"] for code, body in answers if code == 201}
    room_rows = rows(tenant, room__slug=slug)
    assert {row["id"] for row in room_rows} == accepted
    used, total = stored_bytes(tenant)
    assert used == total
    new_files = tenant_files(data_dir, tenant) - files_before
    assert new_files == {row["storage_key"] for row in room_rows}
    with api(servers[1], admin) as client:  # full: one more is refused on either process
        assert upload(client, slug, FILE).status_code == 413

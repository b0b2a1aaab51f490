"""Attachments in an S3-compatible bucket: a real S3 server (moto's standalone server, a
process of its own on a free port), a live uvicorn with S3_BUCKET / S3_ENDPOINT_URL set,
and boto3 to look into the bucket. Nothing is mocked in between: the app talks HTTP to the
S3 server through django-storages and boto3, and the test fetches the presigned links from
that server with httpx.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.api_helpers import open_room_socket
from tests.chat.test_api import api, create_room
from tests.conftest import LiveServer, free_port, start_server, unique
from tests.support import TIMEOUT, ws_receive_type

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4a40000000049454e44ae426082"
)
# Credentials of the test's own S3 server (moto accepts any); not secrets of anything.
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def object_keys(self) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1, with an empty bucket."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "moto_server exited"
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        server = S3Server(endpoint=endpoint, bucket=unique("bucket-").replace("_", "-"))
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def s3_app(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, django_db_setup: None
) -> Iterator[LiveServer]:
    server = start_server(
        tmp_path_factory.mktemp("s3-app"),
        S3_BUCKET=s3_server.bucket,
        S3_ENDPOINT_URL=s3_server.endpoint,
        S3_REGION=REGION,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        ATTACHMENT_URL_TTL="2",
    )
    yield server
    server.stop()


def upload(client: httpx.Client, slug: str, content: bytes, name: str) -> dict[str, Any]:
    response = client.post(
        f"/api/rooms/{slug}/attachments/", files={"file": (name, content, "text/plain")}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_uploads_live_in_the_bucket_under_the_tenants_prefix_and_go_with_their_message(
    s3_server, s3_app, tenant_a, tenant_b, make_user
):
    alice, mallory = make_user(tenant_a), make_user(tenant_b)
    with api(s3_app, alice) as client, api(s3_app, mallory) as other:
        slug = create_room(client)
        body = upload(client, slug, PNG, "pic.txt")
        theirs = upload(other, create_room(other), b"notes of tenant b\n", "b.txt")
        sent = client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "", "attachments": [body["id"]]}
        )
        assert sent.status_code == 201, sent.text
        frame = sent.json()
    assert body["content_type"] == "image/png"
    assert body["url"].startswith(
        f"{s3_server.endpoint}/{s3_server.bucket}/{tenant_a.schema_name}/"
    )
    assert "X-Amz-Signature=" in body["url"] and "Bearer" not in body["url"]

    # The presigned link, fetched from the S3 server itself.
    async with httpx.AsyncClient(timeout=TIMEOUT) as plain:
        got = await plain.get(frame["attachments"][0]["url"])
    assert got.status_code == 200, got.text
    assert got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert got.headers["content-disposition"].startswith("attachment;")

    keys = s3_server.object_keys()
    mine = [k for k in keys if k.startswith(f"{tenant_a.schema_name}/")]
    assert any(k.endswith("/pic.txt") for k in mine)
    assert any(k.startswith(f"{tenant_b.schema_name}/") and k.endswith("/b.txt") for k in keys)
    assert all(k.split("/", 1)[0] in {tenant_a.schema_name, tenant_b.schema_name} for k in keys)
    assert (
        theirs["url"]
        .split("?")[0]
        .split(f"/{s3_server.bucket}/")[1]
        .startswith(f"{tenant_b.schema_name}/")
    )

    ws = await open_room_socket(s3_app, alice, slug)
    try:
        await ws.send(json.dumps({"type": "delete", "id": frame["id"]}))
        await ws_receive_type(ws, "chat.message.deleted")
    finally:
        await ws.close()
    remaining = s3_server.object_keys()
    assert set(mine) - set(remaining) == {k for k in mine if k.endswith("/pic.txt")}
    assert any(k.startswith(f"{tenant_b.schema_name}/") for k in remaining)


def test_a_presigned_link_expires_after_the_ttl(s3_server, s3_app, tenant_a, make_user):
    """S3 enforces the expiry of a presigned link (moto's server does not check it, so the
    test checks what S3 checks: the signed X-Amz-Expires is ATTACHMENT_URL_TTL)."""
    alice = make_user(tenant_a)
    with api(s3_app, alice) as client:
        slug = create_room(client)
        body = upload(client, slug, b"short-lived\n", "a.txt")
        client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "", "attachments": [body["id"]]}
        )
        [frame] = client.get(f"/api/rooms/{slug}/messages/").json()
    for url in (body["url"], frame["attachments"][0]["url"]):
        assert httpx.URL(url).params["X-Amz-Expires"] == "2"
        assert httpx.get(url, timeout=TIMEOUT).status_code == 200
    # History signs afresh: a later page carries a later signing time.
    assert (
        httpx.URL(frame["attachments"][0]["url"]).params["X-Amz-Date"]
        >= httpx.URL(body["url"]).params["X-Amz-Date"]
    )


def test_deleting_a_room_empties_its_prefix_in_the_bucket(s3_server, s3_app, tenant_a, make_user):
    admin = make_user(tenant_a, is_admin=True)
    with api(s3_app, admin) as client:
        slug = create_room(client)
        upload(client, slug, PNG, "one.png")
        upload(client, slug, b"two\n", "two.txt")
        room_id = _room_id(tenant_a.schema_name, slug)
        prefix = f"{tenant_a.schema_name}/{room_id}/"
        assert len([k for k in s3_server.object_keys() if k.startswith(prefix)]) == 2
        assert client.delete(f"/api/rooms/{slug}/").status_code == 204
    assert [k for k in s3_server.object_keys() if k.startswith(prefix)] == []


def _room_id(schema_name: str, slug: str) -> int:
    from chat.models import Room
    from tenants.context import run_in_schema
    from tests.conftest import blocking

    return blocking(lambda: run_in_schema(schema_name, lambda: Room.objects.get(slug=slug).pk))

"""Attachments with local storage (PROTOCOL.md section 6), over a real uvicorn process.

Upload, link to a message over REST and WebSocket, fetch through the signed link; the type
sniffed from the bytes; the size limit; who may upload and see links; expired and foreign
links; bad `attachments` refused without a change; files removed with their message or
room (checked in the server's DATA_DIR), and the sweep of old unlinked uploads.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_helpers import open_room_socket
from tests.chat.test_api import api, create_private_room, create_room
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    start_server,
    tokens_for,
    unique,
)
from tests.support import TIMEOUT, ws_receive_type

MAX_BYTES = 50_000
# A 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8ffff3f0005fe02fea7d6a4a40000000049454e44ae426082"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
OBJECT_FIELDS = {"id", "name", "size", "content_type", "url"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attachments-data")


@pytest.fixture(scope="module")
def files_server(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path, django_db_setup: None
) -> Iterator[LiveServer]:
    """A server storing attachments under its own DATA_DIR, with a small size limit."""
    server = start_server(
        tmp_path_factory.mktemp("attachments-server"),
        DATA_DIR=str(data_dir),
        ATTACHMENT_MAX_BYTES=str(MAX_BYTES),
    )
    yield server
    server.stop()


# --- helpers ---------------------------------------------------------------------------------


def upload(
    client: httpx.Client,
    slug: str,
    content: bytes,
    *,
    name: str = "file.bin",
    content_type: str = "application/octet-stream",
) -> httpx.Response:
    return client.post(
        f"/api/rooms/{slug}/attachments/", files={"file": (name, content, content_type)}
    )


def uploaded(client: httpx.Client, slug: str, content: bytes = PNG, **kw: Any) -> dict[str, Any]:
    response = upload(client, slug, content, **kw)
    assert response.status_code == 201, response.text
    return response.json()


def fetch(server: LiveServer, tenant: TenantInfo, url: str) -> httpx.Response:
    """GET a link the way an `<img src>` would: no Authorization header."""
    with httpx.Client(base_url=server.url, headers={"Host": tenant.domain}, timeout=TIMEOUT) as c:
        return c.get(url)


def stored_files(data_dir: Path) -> set[str]:
    root = data_dir / "attachments"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def rows(tenant: TenantInfo, **filters: Any) -> list[dict[str, Any]]:
    from chat.models import Attachment
    from tenants.context import run_in_schema

    return blocking(
        lambda: run_in_schema(
            tenant.schema_name,
            lambda: list(
                Attachment.objects.filter(**filters).values(
                    "id", "message_id", "storage_key", "room_id", "name"
                )
            ),
        )
    )


def room_state(tenant: TenantInfo, slug: str) -> tuple[int, int]:
    """The room's last seq and its number of stored messages."""
    from chat.models import Message, Room
    from tenants.context import run_in_schema

    def read() -> tuple[int, int]:
        room = Room.objects.get(slug=slug)
        return room.last_seq, Message.objects.filter(room=room).count()

    return blocking(lambda: run_in_schema(tenant.schema_name, read))


def history(client: httpx.Client, slug: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/rooms/{slug}/messages/")
    assert response.status_code == 200, response.text
    return response.json()


# --- upload and fetch ------------------------------------------------------------------------


def test_a_png_sent_as_text_plain_is_image_png_and_its_link_downloads_it(
    files_server, data_dir, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(
            client, slug, PNG, name="../../etc/passwd/pic.txt", content_type="text/plain"
        )
    assert set(body) == OBJECT_FIELDS
    assert body["content_type"] == "image/png"
    assert body["name"] == "pic.txt"  # the last path segment only
    assert body["size"] == len(PNG)
    assert "token" not in body["url"] and "Bearer" not in body["url"]
    [row] = rows(tenant_a, pk=body["id"])
    assert row["message_id"] is None
    assert row["storage_key"].startswith(f"{tenant_a.schema_name}/{row['room_id']}/")
    assert row["storage_key"] in stored_files(data_dir)

    response = fetch(files_server, tenant_a, body["url"])
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert 'filename="pic.txt"' in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_an_html_file_is_served_as_a_download_never_inline(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug, HTML, name="page.png", content_type="image/png")
    assert body["content_type"] == "text/html"  # the bytes, not the name or the header
    response = fetch(files_server, tenant_a, body["url"])
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"just some notes\nline two\n", "text/plain"),
        ("caf\u00e9 \u2603 unicode text".encode(), "text/plain"),
        (b"\x00\x01\x02\x03 binary junk \xff\xfe", "application/octet-stream"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf"),
    ],
)
def test_the_content_type_is_sniffed_from_the_bytes(
    files_server, tenant_a, make_user, content, expected
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug, content, name="x.png", content_type="image/png")
    assert body["content_type"] == expected


def test_a_unicode_file_name_is_kept_and_served_with_rfc_6266_encoding(
    files_server, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug, PNG, name="r\u00e9sum\u00e9 \u2603.png")
    assert body["name"] == "r\u00e9sum\u00e9 \u2603.png"
    response = fetch(files_server, tenant_a, body["url"])
    assert response.status_code == 200
    assert (
        "filename*=utf-8''r%C3%A9sum%C3%A9%20%E2%98%83.png"
        in response.headers["content-disposition"]
    )


# --- the size limit --------------------------------------------------------------------------


def test_a_file_one_byte_over_the_limit_is_413_naming_file_and_stores_nothing(
    files_server, data_dir, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        before = stored_files(data_dir)
        at_limit = upload(client, slug, b"a" * MAX_BYTES)
        over = upload(client, slug, b"a" * (MAX_BYTES + 1))
    assert at_limit.status_code == 201, at_limit.text
    assert over.status_code == 413, over.text
    assert "file" in over.json()
    assert stored_files(data_dir) - before == {
        rows(tenant_a, pk=at_limit.json()["id"])[0]["storage_key"]
    }


def test_a_body_far_over_the_limit_is_413_before_it_is_read(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        response = upload(client, slug, b"a" * (MAX_BYTES * 4))
    assert response.status_code == 413
    assert "file" in response.json()


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(files_server, tenant_a, make_user):
    """No Content-Length: the guard counts the bytes as they arrive."""
    alice = make_user(tenant_a)
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(40):  # 40 x 8 KiB: well over MAX_BYTES and the multipart slack
            yield b"b" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    with api(files_server, alice) as client:
        slug = create_room(client)
        response = client.post(
            f"/api/rooms/{slug}/attachments/",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413, response.text
    assert "file" in response.json()


# --- bad uploads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"files": {"other": ("a.png", PNG, "image/png")}},  # no `file` part
        {"files": {"file": ("empty.txt", b"", "text/plain")}},  # an empty file
        {"data": {"file": "not a file"}, "files": {"x": ("a", b"a", "text/plain")}},
    ],
    ids=["no-file", "empty-file", "file-as-text-field"],
)
def test_an_upload_without_a_usable_file_is_400_naming_file(
    files_server, tenant_a, make_user, kwargs
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        response = client.post(f"/api/rooms/{slug}/attachments/", **kwargs)
    assert response.status_code == 400, response.text
    assert "file" in response.json()
    assert rows(tenant_a, uploader_id=alice.id) == []


def test_a_json_upload_is_415(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        response = client.post(f"/api/rooms/{slug}/attachments/", json={"file": "x"})
    assert response.status_code == 415


def test_an_anonymous_upload_is_401(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
    with httpx.Client(base_url=files_server.url, headers={"Host": tenant_a.domain}) as anon:
        response = anon.post(
            f"/api/rooms/{slug}/attachments/", files={"file": ("a.png", PNG, "image/png")}
        )
    assert response.status_code == 401


# --- who may upload and see links ------------------------------------------------------------


def test_a_non_member_of_a_private_room_cannot_upload_nor_see_its_links(
    files_server, tenant_a, make_user
):
    owner, outsider = make_user(tenant_a), make_user(tenant_a)
    slug = create_private_room(owner)
    with api(files_server, owner) as as_owner, api(files_server, outsider) as as_outsider:
        refused = upload(as_outsider, slug, PNG)
        assert refused.status_code == 404
        body = uploaded(as_owner, slug)
        sent = as_owner.post(
            f"/api/rooms/{slug}/messages/", json={"message": "", "attachments": [body["id"]]}
        )
        assert sent.status_code == 201, sent.text
        assert as_outsider.get(f"/api/rooms/{slug}/messages/").status_code == 404
        # The outsider cannot link the owner's upload into a room of their own either.
        own = create_room(as_outsider)
        stolen = as_outsider.post(
            f"/api/rooms/{own}/messages/", json={"message": "x", "attachments": [body["id"]]}
        )
        assert stolen.status_code == 400 and "attachments" in stolen.json()
        [frame] = history(as_owner, slug)
        assert [a["id"] for a in frame["attachments"]] == [body["id"]]
    assert rows(tenant_a, uploader_id=outsider.id) == []


# --- linking to messages -------------------------------------------------------------------


async def test_a_rest_message_carries_its_attachments_live_and_in_history(
    files_server, tenant_a, make_user
):
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        first = uploaded(client, slug, PNG, name="a.png")
        second = uploaded(client, slug, b"notes\n", name="b.txt")
    ws = await open_room_socket(files_server, bob, slug)
    try:
        with api(files_server, alice) as client:
            response = client.post(
                f"/api/rooms/{slug}/messages/",
                json={"message": "", "attachments": [second["id"], first["id"]]},
            )
            assert response.status_code == 201, response.text
            frame = response.json()
            assert frame["message"] == ""  # text may be empty when files are attached
            assert [a["id"] for a in frame["attachments"]] == [first["id"], second["id"]]
            assert all(set(a) == OBJECT_FIELDS for a in frame["attachments"])
            live = await ws_receive_type(ws, "chat.message")
            assert live["id"] == frame["id"]
            assert [a["name"] for a in live["attachments"]] == ["a.png", "b.txt"]
            plain = client.post(f"/api/rooms/{slug}/messages/", json={"message": "no files"})
            assert plain.json()["attachments"] == []
            [newest, older] = history(client, slug)
        assert newest["attachments"] == [] and older["id"] == frame["id"]
        for obj in older["attachments"]:
            got = fetch(files_server, tenant_a, obj["url"])
            assert got.status_code == 200
        assert fetch(files_server, tenant_a, older["attachments"][0]["url"]).content == PNG
    finally:
        await ws.close()
    assert {r["message_id"] for r in rows(tenant_a, pk__in=[first["id"], second["id"]])} == {
        frame["id"]
    }


async def test_a_socket_message_links_attachments_and_a_resend_returns_the_original(
    files_server, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
    ws = await open_room_socket(files_server, alice, slug)
    try:
        client_id = str(uuid.uuid4())
        frame = {"type": "message", "attachments": [body["id"]], "client_id": client_id}
        await ws.send(json.dumps(frame))  # no `message` at all: files only
        first = await ws_receive_type(ws, "chat.message")
        assert first["message"] == ""
        assert [a["id"] for a in first["attachments"]] == [body["id"]]
        await ws.send(json.dumps(frame))
        again = await ws_receive_type(ws, "chat.message")
        assert again["id"] == first["id"] and again["seq"] == first["seq"]
        assert [a["id"] for a in again["attachments"]] == [body["id"]]
        # Replay with since=0 carries them too.
        replay_ws = await open_room_socket_since(files_server, alice, slug, 0)
        try:
            replayed = await ws_receive_type(replay_ws, "chat.message")
            assert [a["id"] for a in replayed["attachments"]] == [body["id"]]
        finally:
            await replay_ws.close()
    finally:
        await ws.close()
    assert room_state(tenant_a, slug) == (1, 1)


async def open_room_socket_since(server: LiveServer, user: UserInfo, slug: str, since: int) -> Any:
    from tests.support import ws_connect

    token = tokens_for(user)["access"]
    return await ws_connect(
        server.ws_url, user.tenant.domain, f"/ws/chat/{slug}/?token={token}&since={since}"
    )


@pytest.fixture
def refusal_setup(files_server, tenant_a, make_user) -> dict[str, Any]:
    """alice's room with one own upload, plus uploads that alice may not attach there: bob's,
    one of another room, one linked already."""
    alice, bob = make_user(tenant_a), make_user(tenant_a)
    with api(files_server, alice) as as_alice, api(files_server, bob) as as_bob:
        slug, other = create_room(as_alice), create_room(as_alice)
        own = uploaded(as_alice, slug)["id"]
        bobs = uploaded(as_bob, slug)["id"]
        elsewhere = uploaded(as_alice, other)["id"]
        linked = uploaded(as_alice, slug)["id"]
        sent = as_alice.post(
            f"/api/rooms/{slug}/messages/", json={"message": "x", "attachments": [linked]}
        )
        assert sent.status_code == 201
    return {
        "alice": alice,
        "slug": slug,
        "own": own,
        "foreign": bobs,
        "other_room": elsewhere,
        "linked": linked,
    }


BAD_LISTS = {
    "not-a-list": lambda s: s["own"],
    "a-string": lambda s: [str(s["own"])],
    "a-boolean": lambda s: [True],
    "zero": lambda s: [0],
    "an-object": lambda s: {"id": s["own"]},
    "too-many": lambda s: [s["own"], *range(10**9, 10**9 + 10)],
    "twice": lambda s: [s["own"], s["own"]],
    "unknown": lambda s: [s["own"], 10**12],
    "another-users": lambda s: [s["own"], s["foreign"]],
    "another-rooms": lambda s: [s["own"], s["other_room"]],
    "already-linked": lambda s: [s["own"], s["linked"]],
}


@pytest.mark.parametrize("case", list(BAD_LISTS))
def test_bad_attachments_over_rest_are_400_naming_attachments_and_change_nothing(
    files_server, tenant_a, refusal_setup, case
):
    s = refusal_setup
    before = room_state(tenant_a, s["slug"])
    with api(files_server, s["alice"]) as client:
        response = client.post(
            f"/api/rooms/{s['slug']}/messages/",
            json={"message": "hi", "attachments": BAD_LISTS[case](s)},
        )
    assert response.status_code == 400, response.text
    assert "attachments" in response.json()
    assert room_state(tenant_a, s["slug"]) == before
    assert rows(tenant_a, pk=s["own"])[0]["message_id"] is None


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("not-a-list", "invalid_frame"),
        ("a-string", "invalid_frame"),
        ("too-many", "invalid_frame"),
        ("twice", "invalid_frame"),
        ("unknown", "not_found"),
        ("another-users", "not_found"),
        ("another-rooms", "not_found"),
        ("already-linked", "not_found"),
    ],
)
async def test_bad_attachments_over_a_socket_are_an_error_frame_and_change_nothing(
    files_server, tenant_a, refusal_setup, case, code
):
    s = refusal_setup
    before = room_state(tenant_a, s["slug"])
    ws = await open_room_socket(files_server, s["alice"], s["slug"])
    try:
        frame = {"type": "message", "message": "hi", "attachments": BAD_LISTS[case](s)}
        await ws.send(json.dumps(frame))
        error = await ws_receive_type(ws, "error")
    finally:
        await ws.close()
    assert error["code"] == code
    assert "attachments" in error["detail"]
    assert room_state(tenant_a, s["slug"]) == before
    assert rows(tenant_a, pk=s["own"])[0]["message_id"] is None


async def test_an_empty_message_without_attachments_is_still_refused(
    files_server, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        response = client.post(
            f"/api/rooms/{slug}/messages/", json={"message": " ", "attachments": []}
        )
    assert response.status_code == 400 and "message" in response.json()


# --- links: expiry and tenants ---------------------------------------------------------------


def test_an_expired_link_is_403(server_factory, data_dir, tenant_a, make_user):
    # 5 s: a loaded machine may take seconds between the upload's answer and the first fetch.
    server = server_factory(DATA_DIR=str(data_dir), ATTACHMENT_URL_TTL="5")
    alice = make_user(tenant_a)
    with api(server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
    assert fetch(server, tenant_a, body["url"]).status_code == 200
    expires = int(httpx.URL(body["url"]).params["exp"])
    time.sleep(max(expires - time.time(), 0) + 1.1)
    assert fetch(server, tenant_a, body["url"]).status_code == 403
    with api(server, alice) as client:  # history hands out a fresh link
        client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "", "attachments": [body["id"]]}
        )
        [frame] = history(client, slug)
    assert fetch(server, tenant_a, frame["attachments"][0]["url"]).status_code == 200


def test_a_tampered_link_is_403(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
    url = httpx.URL(body["url"])
    exp, sig = url.params["exp"], url.params["sig"]
    path = url.path
    later = str(int(exp) + 3600)
    for params in ({"exp": later, "sig": sig}, {"exp": exp, "sig": sig[:-2] + "xx"}, {}):
        response = fetch(files_server, tenant_a, str(httpx.URL(path, params=params)))
        assert response.status_code == 403, params
    other_id = path.replace(f"/{body['id']}/", f"/{body['id'] + 1}/")
    assert fetch(files_server, tenant_a, f"{other_id}?exp={exp}&sig={sig}").status_code == 403


def test_a_link_of_one_tenant_fails_on_another_tenants_host(
    files_server, tenant_a, tenant_b, make_user
):
    alice, mallory = make_user(tenant_a), make_user(tenant_b)
    with api(files_server, alice) as as_alice, api(files_server, mallory) as as_mallory:
        body = uploaded(as_alice, create_room(as_alice))
        # Give tenant B attachment rows up to the same id, so the id itself exists there.
        b_slug = create_room(as_mallory)
        for _ in range(3):
            uploaded(as_mallory, b_slug)
    assert fetch(files_server, tenant_a, body["url"]).status_code == 200
    assert fetch(files_server, tenant_b, body["url"]).status_code == 403


# --- removal ---------------------------------------------------------------------------------


async def test_deleting_a_message_removes_its_files_and_rows(
    files_server, data_dir, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
        kept = uploaded(client, slug)  # unlinked: stays
        frame = client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "x", "attachments": [body["id"]]}
        ).json()
    [row] = rows(tenant_a, pk=body["id"])
    assert row["storage_key"] in stored_files(data_dir)
    ws = await open_room_socket(files_server, alice, slug)
    try:
        await ws.send(json.dumps({"type": "delete", "id": frame["id"]}))
        await ws_receive_type(ws, "chat.message.deleted")
    finally:
        await ws.close()
    assert rows(tenant_a, pk=body["id"]) == []
    assert row["storage_key"] not in stored_files(data_dir)
    assert not (data_dir / "attachments" / row["storage_key"]).parent.exists()
    assert fetch(files_server, tenant_a, body["url"]).status_code == 404
    assert rows(tenant_a, pk=kept["id"]) != []


def test_deleting_a_room_removes_all_its_files(files_server, data_dir, tenant_a, make_user):
    admin = make_user(tenant_a, is_admin=True)
    with api(files_server, admin) as client:
        slug = create_room(client)
        linked = uploaded(client, slug)
        unlinked = uploaded(client, slug)
        client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "x", "attachments": [linked["id"]]}
        )
        keys = {r["storage_key"] for r in rows(tenant_a, pk__in=[linked["id"], unlinked["id"]])}
        assert len(keys) == 2 and keys <= stored_files(data_dir)
        assert client.delete(f"/api/rooms/{slug}/").status_code == 204
    assert not keys & stored_files(data_dir)
    assert rows(tenant_a, pk__in=[linked["id"], unlinked["id"]]) == []


@pytest.mark.parametrize("runner", ["command", "task"])
def test_the_sweep_removes_old_unlinked_uploads_only(
    files_server, data_dir, tenant_a, make_user, runner
):
    from django.core.management import call_command
    from django.utils import timezone

    from chat.models import Attachment
    from tenants.context import run_in_schema

    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        old, fresh, old_linked = (uploaded(client, slug) for _ in range(3))
        client.post(
            f"/api/rooms/{slug}/messages/",
            json={"message": "x", "attachments": [old_linked["id"]]},
        )
    blocking(
        lambda: run_in_schema(
            tenant_a.schema_name,
            lambda: Attachment.objects.filter(pk__in=[old["id"], old_linked["id"]]).update(
                created_at=timezone.now() - timedelta(days=2)
            ),
        )
    )
    [old_row] = rows(tenant_a, pk=old["id"])
    # The sweep runs where the files are: this process pointed at the server's DATA_DIR.
    from django.core.files.storage import storages
    from django.test import override_settings

    storages._storages.pop("attachments", None)
    location = str(data_dir / "attachments")
    stores = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": location},
        },
    }
    try:
        with override_settings(STORAGES=stores):
            if runner == "command":
                blocking(
                    lambda: call_command(
                        "attachments_sweep", schema=tenant_a.schema_name, stdout=io.StringIO()
                    )
                )
            else:  # the worker's hourly Procrastinate task, every tenant
                from chat.tasks import sweep_attachments

                removed = blocking(lambda: asyncio.run(sweep_attachments.func(timestamp=0)))
                assert removed >= 1
    finally:
        storages._storages.pop("attachments", None)
    assert rows(tenant_a, pk=old["id"]) == []
    assert old_row["storage_key"] not in stored_files(data_dir)
    assert len(rows(tenant_a, pk__in=[fresh["id"], old_linked["id"]])) == 2


def test_a_slug_outside_the_pattern_is_404(files_server, tenant_a, make_user):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        assert upload(client, unique("missing_"), PNG).status_code == 404


def test_uploads_take_from_the_users_rest_write_budget(
    server_factory, data_dir, tenant_a, make_user
):
    server = server_factory(
        DATA_DIR=str(data_dir), CHAT_RATE_BURST="3", CHAT_RATE_PER_SECOND="0.01"
    )
    alice = make_user(tenant_a)
    with api(server, alice) as client:
        slug = create_room(client)  # one token
        answers = [upload(client, slug, PNG).status_code for _ in range(3)]
        limited = upload(client, slug, PNG)
    assert answers[:2] == [201, 201] and 429 in answers
    assert limited.status_code == 429 and "retry-after" in limited.headers
    assert len(rows(tenant_a, uploader_id=alice.id)) == 2


async def test_an_edited_message_keeps_its_attachments_in_the_edited_frame(
    files_server, tenant_a, make_user
):
    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
        frame = client.post(
            f"/api/rooms/{slug}/messages/", json={"message": "v1", "attachments": [body["id"]]}
        ).json()
    ws = await open_room_socket(files_server, alice, slug)
    try:
        await ws.send(json.dumps({"type": "edit", "id": frame["id"], "message": "v2"}))
        edited = await ws_receive_type(ws, "chat.message.edited")
    finally:
        await ws.close()
    assert edited["message"] == "v2"
    assert [a["id"] for a in edited["attachments"]] == [body["id"]]


def test_two_messages_racing_for_one_upload_link_it_once(files_server, tenant_a, make_user):
    from concurrent.futures import ThreadPoolExecutor

    alice = make_user(tenant_a)
    with api(files_server, alice) as client:
        slug = create_room(client)
        body = uploaded(client, slug)
    token = tokens_for(alice)["access"]

    def send(n: int) -> int:
        headers = {"Host": tenant_a.domain, "Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=files_server.url, headers=headers, timeout=TIMEOUT) as c:
            return c.post(
                f"/api/rooms/{slug}/messages/",
                json={"message": f"m{n}", "attachments": [body["id"]]},
            ).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = sorted(pool.map(send, range(4)))
    assert answers == [201, 400, 400, 400]
    assert room_state(tenant_a, slug) == (1, 1)


def test_two_tenants_uploading_at_once_keep_to_their_own_prefix_and_links(
    files_server, data_dir, tenant_a, tenant_b, make_user
):
    """The storage key's schema and the link's salt come from the request's tenant: under
    concurrent uploads of two tenants on one server (several request threads), every file
    lands under its own tenant's prefix and its link works on that tenant's host only."""
    from concurrent.futures import ThreadPoolExecutor

    users = {t.schema_name: make_user(t) for t in (tenant_a, tenant_b)}
    tenants = {t.schema_name: t for t in (tenant_a, tenant_b)}
    slugs = {}
    for schema, user in users.items():
        with api(files_server, user) as client:
            slugs[schema] = create_room(client)

    def upload_many(job: tuple[str, int]) -> tuple[str, list[dict[str, Any]]]:
        schema, part = job
        with api(files_server, users[schema]) as client:
            return schema, [
                uploaded(client, slugs[schema], PNG + schema.encode() + bytes([part, i]))
                for i in range(4)
            ]

    # Two uploaders per tenant, four requests in flight, the tenants interleaved.
    jobs = [(schema, part) for part in range(2) for schema in users]
    results: dict[str, list[dict[str, Any]]] = {schema: [] for schema in users}
    with ThreadPoolExecutor(len(jobs)) as pool:
        for schema, bodies in pool.map(upload_many, jobs):
            results[schema] += bodies
    for schema, bodies in results.items():
        other = next(s for s in tenants if s != schema)
        keys = {row["storage_key"] for row in rows(tenants[schema], uploader_id=users[schema].id)}
        assert len(keys) == 8 and all(key.startswith(f"{schema}/") for key in keys), keys
        assert keys <= stored_files(data_dir)
        for body in bodies[:3]:
            assert fetch(files_server, tenants[schema], body["url"]).status_code == 200
            assert fetch(files_server, tenants[other], body["url"]).status_code in (403, 404)

"""PROTOCOL section 5 against real processes: uvicorn, a Procrastinate worker, PostgreSQL,
Redis and a local HTTP receiver whose signatures the `standardwebhooks` package checks."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.api_helpers import assert_field_error, bearer
from tests.conftest import LiveServer, TenantInfo, blocking, make_user_in, tokens_for
from tests.support import TIMEOUT, ws_connect, ws_receive_type


def client(server: LiveServer, tenant: TenantInfo, **headers: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Host": tenant.domain, **headers}, timeout=TIMEOUT
    )


def admin_client(server: LiveServer, tenant: TenantInfo) -> httpx.Client:
    admin = make_user_in(tenant, is_admin=True)
    return client(server, tenant, **bearer(tokens_for(admin)["access"]))


def api_key(server: LiveServer, tenant: TenantInfo) -> str:
    with admin_client(server, tenant) as c:
        answer = c.post("/api/keys/", json={"name": "backend"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"id", "name", "prefix", "key", "created_at"}
    return str(body["key"])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- API keys and server tokens ---------------------------------------------------------


def test_api_key_acts_as_admin_on_its_own_host_only_and_dies_when_revoked(
    hook_server: LiveServer, tenant_x: TenantInfo, tenant_y: TenantInfo
) -> None:
    key = api_key(hook_server, tenant_x)
    auth = {"Authorization": f"Api-Key {key}"}
    with client(hook_server, tenant_x, **auth) as c:
        assert c.get("/api/users/").status_code == 200
        listed = c.get("/api/keys/").json()["results"]
        assert all("key" not in item for item in listed)
    with client(hook_server, tenant_y, **auth) as c:
        assert c.get("/api/users/").status_code == 401
    with httpx.Client(base_url=hook_server.url, headers={"Host": "localhost", **auth}) as c:
        assert c.get("/api/tenants/").status_code == 401
    with admin_client(hook_server, tenant_x) as c:
        key_id = key.split(".")[0]
        assert c.delete(f"/api/keys/{key_id}/").status_code == 204
        assert c.delete(f"/api/keys/{key_id}/").status_code == 404
    with client(hook_server, tenant_x, **auth) as c:
        assert c.get("/api/users/").status_code == 401
    assert key not in hook_server.log()


def test_members_cannot_make_keys_and_names_are_checked(
    hook_server: LiveServer, tenant_x: TenantInfo
) -> None:
    member = make_user_in(tenant_x)
    with client(hook_server, tenant_x, **bearer(tokens_for(member)["access"])) as c:
        assert c.post("/api/keys/", json={"name": "x"}).status_code == 403
    with admin_client(hook_server, tenant_x) as c:
        assert_field_error(c.post("/api/keys/", json={"name": ""}), "name")
        assert_field_error(c.post("/api/keys/", json={"name": "n" * 51}), "name")
        assert_field_error(c.post("/api/keys/", json={}), "name")
        assert_field_error(c.post("/api/keys/", json={"name": ["x"]}), "name")


async def test_server_token_creates_the_user_once_and_opens_a_socket(
    hook_server: LiveServer, tenant_x: TenantInfo
) -> None:
    key = await blocking_async(api_key, hook_server, tenant_x)
    async with httpx.AsyncClient(
        base_url=hook_server.url,
        headers={"Host": tenant_x.domain, "Authorization": f"Api-Key {key}"},
        timeout=TIMEOUT,
    ) as c:
        first = await c.post("/api/server/tokens/", json={"user": "ext-42"})
        again = await c.post("/api/server/tokens/", json={"user": "ext-42", "is_admin": True})
        assert first.status_code == again.status_code == 200, first.text
        burst = [await c.post("/api/server/tokens/", json={"user": f"b-{n}"}) for n in range(25)]
        assert {r.status_code for r in burst} == {200}, "a login burst is not a write budget"
        assert_field_error(await c.post("/api/server/tokens/", json={"user": ""}), "user")
        assert_field_error(await c.post("/api/server/tokens/", json={"user": "x" * 129}), "user")
        assert_field_error(
            await c.post("/api/server/tokens/", json={"user": "e1", "username": "a b"}),
            "username",
        )
        me1 = await c.get("/api/me/", headers=bearer(first.json()["access"]))
        me2 = await c.get("/api/me/", headers=bearer(again.json()["access"]))
    assert me1.json()["username"] == "ext-42"
    assert me1.json()["id"] == me2.json()["id"] and me2.json()["is_admin"] is True
    assert jwt.decode(first.json()["access"], options={"verify_signature": False})["tenant"] == (
        tenant_x.schema_name
    )
    ws = await ws_connect(
        hook_server.ws_url, tenant_x.domain, f"/ws/chat/general/?token={first.json()['access']}"
    )
    try:
        assert (await ws_receive_type(ws, "presence"))["users"]
    finally:
        await ws.close()


async def blocking_async(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


def test_server_tokens_need_an_api_key(hook_server: LiveServer, tenant_x: TenantInfo) -> None:
    with admin_client(hook_server, tenant_x) as c:
        assert c.post("/api/server/tokens/", json={"user": "ext-1"}).status_code == 403


# --- signing keys --------------------------------------------------------------------------


def _ed25519(kid: str) -> tuple[ed25519.Ed25519PrivateKey, dict[str, str]]:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    return private, {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64url(raw)}


def _rsa_jwk(kid: str, bits: int) -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**jwk, "kid": kid}


def _token(private: Any, kid: str, alg: str = "EdDSA", **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "ext-signed", "iat": now, "exp": now + 600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


def _unsigned(kid: str) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "none", "kid": kid}).encode())
    body = b64url(json.dumps({"sub": "ext-signed", "iat": now, "exp": now + 600}).encode())
    return f"{header}.{body}."


def _hs256_with_public_key(kid: str, public_x: str) -> str:
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": "ext-signed", "iat": now, "exp": now + 600}).encode())
    import hashlib
    import hmac

    signature = hmac.new(public_x.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{b64url(signature.digest())}"


async def _ws_close_code(server: LiveServer, tenant: TenantInfo, token: str) -> int | None:
    ws = await ws_connect(server.ws_url, tenant.domain, f"/ws/notifications/?token={token}")
    with contextlib.suppress(Exception):
        await ws.recv()
    await ws.wait_closed()
    return ws.close_code


async def test_tenant_signed_tokens_and_every_bad_one(
    hook_server: LiveServer, tenant_x: TenantInfo, tenant_y: TenantInfo
) -> None:
    private, jwk = _ed25519("k-good")
    other_private, other_jwk = _ed25519("k-other")
    revoked_private, revoked_jwk = _ed25519("k-revoked")
    _small_rsa, small_jwk = _rsa_jwk("k-small", 1024)

    def register() -> None:
        with admin_client(hook_server, tenant_x) as c:
            answer = c.post("/api/signing-keys/", json={"jwk": jwk})
            assert answer.status_code == 201, answer.text
            assert answer.json()["alg"] == "EdDSA" and set(answer.json()) == {
                "kid",
                "kty",
                "alg",
                "created_at",
            }
            assert_field_error(c.post("/api/signing-keys/", json={"jwk": jwk}), "jwk")
            assert_field_error(c.post("/api/signing-keys/", json={"jwk": small_jwk}), "jwk")
            with_private = {**jwk, "kid": "k-priv", "d": b64url(private.private_bytes_raw())}
            assert_field_error(c.post("/api/signing-keys/", json={"jwk": with_private}), "jwk")
            assert_field_error(c.post("/api/signing-keys/", json={"jwk": "nope"}), "jwk")
            oct_key = {"kty": "oct", "kid": "k-oct", "k": "c2VjcmV0"}
            assert_field_error(c.post("/api/signing-keys/", json={"jwk": oct_key}), "jwk")
            assert c.post("/api/signing-keys/", json={"jwk": revoked_jwk}).status_code == 201
            assert c.delete("/api/signing-keys/k-revoked/").status_code == 204
        with admin_client(hook_server, tenant_y) as c:
            assert c.post("/api/signing-keys/", json={"jwk": other_jwk}).status_code == 201

    await blocking_async(register)
    good = _token(private, "k-good", username="signed_user")
    bad = {
        "alg none": _unsigned("k-good"),
        "HS256 keyed with the public key": _hs256_with_public_key("k-good", jwk["x"]),
        "unknown kid": _token(private, "k-missing"),
        "other tenant's kid": _token(other_private, "k-other"),
        "revoked key": _token(revoked_private, "k-revoked"),
        "exp too far": _token(private, "k-good", exp=int(time.time()) + 25 * 3600),
        "missing sub": _token(private, "k-good", sub=None),
        "wrong signature": _token(other_private, "k-good"),
    }
    async with httpx.AsyncClient(
        base_url=hook_server.url, headers={"Host": tenant_x.domain}, timeout=TIMEOUT
    ) as c:
        me = await c.get("/api/me/", headers=bearer(good))
        assert me.status_code == 200 and me.json()["username"] == "signed_user"
        for name, token in bad.items():
            assert (await c.get("/api/me/", headers=bearer(token))).status_code == 401, name
    ws = await ws_connect(hook_server.ws_url, tenant_x.domain, f"/ws/chat/general/?token={good}")
    try:
        assert "signed_user" in (await ws_receive_type(ws, "presence"))["users"]
        # In band: a fresh tenant-signed token of the same user extends the session.
        fresh = _token(private, "k-good", username="signed_user", exp=int(time.time()) + 900)
        await ws.send(json.dumps({"type": "auth", "token": fresh}))
        assert (await ws_receive_type(ws, "auth.ok"))["exp"] == jwt.decode(
            fresh, options={"verify_signature": False}
        )["exp"]
    finally:
        await ws.close()
    for name, token in {**bad, "another user": _token(private, "k-good", sub="ext-other")}.items():
        ws = await ws_connect(
            hook_server.ws_url, tenant_x.domain, f"/ws/chat/general/?token={good}"
        )
        await ws_receive_type(ws, "presence")
        await ws.send(json.dumps({"type": "auth", "token": token}))
        with contextlib.suppress(Exception):
            while True:
                await ws.recv()
        assert ws.close_code == 4401, name
    for name, token in bad.items():
        assert await _ws_close_code(hook_server, tenant_x, token) == 4401, name


# --- webhooks -----------------------------------------------------------------------------


def _create_hook(server: LiveServer, tenant: TenantInfo, url: str, events: list[str]) -> dict:
    with admin_client(server, tenant) as c:
        answer = c.post("/api/webhooks/", json={"url": url, "events": events})
    assert answer.status_code == 201, answer.text
    assert answer.json()["secret"].startswith("whsec_")
    return dict(answer.json())


def _send(server: LiveServer, tenant: TenantInfo, text: str, room: str = "general") -> dict:
    user = make_user_in(tenant)
    with client(server, tenant, **bearer(tokens_for(user)["access"])) as c:
        answer = c.post(f"/api/rooms/{room}/messages/", json={"message": text})
        if answer.status_code == 404:
            c.post("/api/rooms/", json={"slug": room, "name": room})
            answer = c.post(f"/api/rooms/{room}/messages/", json={"message": text})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_message_created_is_signed_retried_after_500s_and_logged(
    hook_server: LiveServer, worker: Any, tenant_x: TenantInfo, receiver_factory: Any
) -> None:
    receiver = receiver_factory(statuses=[500, 500])
    hook = _create_hook(hook_server, tenant_x, receiver.url, ["message.created"])
    frame = _send(hook_server, tenant_x, "hello hooks", room="hooks")
    calls = receiver.wait_for(3)
    assert len(calls) == 3, worker.log()
    verifier = StandardWebhook(hook["secret"])
    ids = set()
    for call in calls:
        payload = verifier.verify(call["body"], call["headers"])  # raises on a bad signature
        ids.add(call["headers"]["webhook-id"])
    assert len(ids) == 1, "every retry keeps the webhook-id"
    assert payload["type"] == "message.created"
    assert payload["data"]["message"]["id"] == frame["id"]
    assert payload["data"]["room"] == "hooks"
    assert calls[1]["at"] - calls[0]["at"] >= 0.9  # WEBHOOK_RETRY_SCHEDULE=1,1,1
    with admin_client(hook_server, tenant_x) as c:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            deliveries = c.get(f"/api/webhooks/{hook['id']}/deliveries/").json()["results"]
            if deliveries and deliveries[0]["state"] == "delivered":
                break
            time.sleep(0.2)
        assert deliveries[0]["state"] == "delivered"
        assert [a["status_code"] for a in deliveries[0]["attempts"]] == [500, 500, 200]
        retry = c.post(f"/api/webhooks/{hook['id']}/deliveries/{deliveries[0]['id']}/retry/")
        assert retry.status_code == 202
        assert c.get(f"/api/webhooks/{hook['id']}/").json().get("secret") is None
        assert c.post(f"/api/webhooks/{hook['id']}/deliveries/999999/retry/").status_code == 404
    fourth = receiver.wait_for(4)
    assert len(fourth) == 4 and fourth[3]["headers"]["webhook-id"] in ids
    with admin_client(hook_server, tenant_x) as c:
        assert c.patch(f"/api/webhooks/{hook['id']}/", json={"is_active": False}).status_code == 200
        refused = c.post(f"/api/webhooks/{hook['id']}/deliveries/{deliveries[0]['id']}/retry/")
        assert_field_error(refused, "webhook")
    # The worker's own /metrics counts the attempts by outcome.
    metrics = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=TIMEOUT).text
    counts = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("webhook_delivery_attempts_total{")
    }
    assert counts.get("delivered", 0) >= 1 and counts.get("retry", 0) >= 2, counts


def test_failed_after_the_schedule(
    hook_server: LiveServer, worker: Any, tenant_y: TenantInfo, receiver_factory: Any
) -> None:
    receiver = receiver_factory(statuses=[503] * 10)
    hook = _create_hook(hook_server, tenant_y, receiver.url, ["*"])
    make_user_in(tenant_y)  # not through the API: no event
    with admin_client(hook_server, tenant_y) as c:
        answer = c.post("/api/users/", json={"username": "hooked_user", "password": "pw-abcdefgh1"})
        assert answer.status_code == 201
        receiver.wait_for(4)  # 1 + 3 retries
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = c.get(f"/api/webhooks/{hook['id']}/deliveries/").json()["results"]
            user_rows = [r for r in rows if r["event"] == "user.created"]
            if user_rows and user_rows[0]["state"] == "failed":
                break
            time.sleep(0.2)
        assert user_rows[0]["state"] == "failed" and len(user_rows[0]["attempts"]) == 4
        assert c.delete(f"/api/webhooks/{hook['id']}/").status_code == 204


def test_blackholed_endpoint_does_not_delay_another_tenant(
    hook_server: LiveServer,
    worker: Any,
    tenant_x: TenantInfo,
    tenant_y: TenantInfo,
    receiver_factory: Any,
) -> None:
    hole = receiver_factory(blackhole=True)
    fast = receiver_factory()
    slow_hook = _create_hook(hook_server, tenant_y, hole.url, ["message.created"])
    fast_hook = _create_hook(hook_server, tenant_x, fast.url, ["message.created"])
    for n in range(5):
        _send(hook_server, tenant_y, f"into the hole {n}", room="hole")
    hole.wait_for(1)
    started = time.monotonic()
    _send(hook_server, tenant_x, "still fast", room="fast")
    calls = fast.wait_for(1, timeout=8)
    assert calls, "the other tenant's delivery waited behind the blackhole"
    assert calls[0]["at"] - started < 5
    with admin_client(hook_server, tenant_y) as c:
        c.delete(f"/api/webhooks/{slow_hook['id']}/")
    with admin_client(hook_server, tenant_x) as c:
        c.delete(f"/api/webhooks/{fast_hook['id']}/")


def test_private_targets_refused_without_the_development_switch(
    live_server: LiveServer, tenant_x: TenantInfo
) -> None:
    with admin_client(live_server, tenant_x) as c:
        for url in ("http://127.0.0.1:9/x", "http://10.0.0.1/x", "http://169.254.169.254/x"):
            assert_field_error(c.post("/api/webhooks/", json={"url": url, "events": ["*"]}), "url")
        assert_field_error(
            c.post("/api/webhooks/", json={"url": "ftp://example.com/", "events": ["*"]}), "url"
        )
        assert_field_error(
            c.post("/api/webhooks/", json={"url": "http://x.example/", "events": ["nope"]}),
            "events",
        )


def test_rolled_back_change_records_nothing(tenant_x: TenantInfo) -> None:
    from django.db import transaction

    from integrations import webhooks
    from integrations.models import Delivery, Webhook
    from tenants.context import run_in_schema

    def attempt() -> int:
        hook = Webhook.objects.create(url="http://x.example/", events=["*"], secret="whsec_AA==")
        try:
            with transaction.atomic():
                webhooks.record("user.created", {"user": {"id": 1}})
                assert Delivery.objects.filter(webhook=hook).count() == 1
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        count = Delivery.objects.filter(webhook=hook).count()
        hook.delete()
        return count

    assert blocking(lambda: run_in_schema(tenant_x.schema_name, attempt)) == 0


async def test_room_made_by_a_join_and_a_member_change_are_reported(
    hook_server: LiveServer, worker: Any, tenant_x: TenantInfo, receiver_factory: Any
) -> None:
    receiver = receiver_factory()
    hook = await blocking_async(
        _create_hook, hook_server, tenant_x, receiver.url, ["room.created", "member.added"]
    )
    user = await blocking_async(make_user_in, tenant_x)
    access = (await blocking_async(tokens_for, user))["access"]
    ws = await ws_connect(
        hook_server.ws_url, tenant_x.domain, f"/ws/chat/joined-room/?token={access}"
    )
    try:
        await ws_receive_type(ws, "presence")
    finally:
        await ws.close()

    def add_member() -> None:
        with admin_client(hook_server, tenant_x) as c:
            c.post("/api/rooms/", json={"slug": "secret", "name": "S", "is_private": True})
            answer = c.post("/api/rooms/secret/members/", json={"user_id": user.id})
            assert answer.status_code in (200, 201), answer.text

    await blocking_async(add_member)
    calls = await blocking_async(receiver.wait_for, 3)  # two rooms, one member
    verifier = StandardWebhook(hook["secret"])
    payloads = [verifier.verify(call["body"], call["headers"]) for call in calls]
    created = {p["data"]["room"]["slug"] for p in payloads if p["type"] == "room.created"}
    assert created == {"joined-room", "secret"}
    added = [p["data"] for p in payloads if p["type"] == "member.added"]
    assert added == [{"room": "secret", "user": {"id": user.id, "username": user.username}}]
    with admin_client(hook_server, tenant_x) as c:
        c.delete(f"/api/webhooks/{hook['id']}/")


async def test_backend_key_token_socket_and_verified_webhook_end_to_end(
    hook_server: LiveServer, worker: Any, tenant_y: TenantInfo, receiver_factory: Any
) -> None:
    """The issue's 'done when': key, token for `ext-42`, socket, verified `message.created`."""
    receiver = receiver_factory()
    key = await blocking_async(api_key, hook_server, tenant_y)
    async with httpx.AsyncClient(
        base_url=hook_server.url,
        headers={"Host": tenant_y.domain, "Authorization": f"Api-Key {key}"},
        timeout=TIMEOUT,
    ) as c:
        made = await c.post(
            "/api/webhooks/", json={"url": receiver.url, "events": ["message.created"]}
        )
        assert made.status_code == 201, made.text
        tokens = (await c.post("/api/server/tokens/", json={"user": "ext-42"})).json()
    ws = await ws_connect(
        hook_server.ws_url, tenant_y.domain, f"/ws/chat/e2e/?token={tokens['access']}"
    )
    try:
        await ws_receive_type(ws, "presence")
        await ws.send(json.dumps({"type": "message", "message": "hello from ext-42"}))
        frame = await ws_receive_type(ws, "chat.message")
    finally:
        await ws.close()
    calls = await blocking_async(receiver.wait_for, 1)
    payload = StandardWebhook(made.json()["secret"]).verify(calls[0]["body"], calls[0]["headers"])
    assert payload["type"] == "message.created"
    assert payload["data"] == {"room": "e2e", "message": frame}
    assert frame["user"] == "ext-42"

"""The platform API on the public host (`localhost`), over a real uvicorn (PROTOCOL.md
section 2): platform admins log in there and create, list, show, rename, deactivate and
reactivate tenants. Creating a tenant is slow (a schema and its migrations), so one tenant
made through the API serves every test of its life cycle.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.api_helpers import (
    PLATFORM_HOST,
    assert_field_error,
    assert_paginated,
    close_code_within,
    http,
    login,
    make_platform_user,
    open_room_socket,
)
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    make_user_in,
    tokens_for,
    unique,
)

TENANT_FIELDS = {
    "schema_name",
    "name",
    "domain",
    "is_active",
    "created_at",
    "rate_limit_per_second",
    "rate_limit_burst",
    "attachment_quota_bytes",
    "attachment_bytes_used",
}


@pytest.fixture(scope="module")
def operator(live_server: LiveServer, django_db_blocker: Any) -> UserInfo:
    """A platform admin (a staff user of the public schema), as `make run` makes one."""
    with django_db_blocker.unblock():
        return make_platform_user(is_admin=True)


@pytest.fixture(scope="module")
def operator_token(live_server: LiveServer, operator: UserInfo) -> str:
    response = login(live_server, PLATFORM_HOST, operator.username, operator.password)
    assert response.status_code == 200, response.text
    return response.json()["access"]


def platform(server: LiveServer, token: str | None) -> Any:
    return http(server, PLATFORM_HOST, token)


def tenant_body(**overrides: Any) -> dict[str, Any]:
    schema_name = unique("t_")
    return {
        "schema_name": schema_name,
        "name": "Made by the API",
        "domain": f"{schema_name.replace('_', '-')}.localhost",
        "admin": {"username": "boss", "password": "a-long-password"},
        **overrides,
    }


def tenant_row(schema_name: str) -> dict[str, Any] | None:
    from tenants.models import Tenant

    return blocking(
        lambda: Tenant.objects.filter(schema_name=schema_name).values("name", "is_active").first()
    )


def schema_exists(schema_name: str) -> bool:
    from django.db import connection

    def query() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", [schema_name]
            )
            return cursor.fetchone() is not None

    return blocking(query)


def rows_in(schema_name: str) -> dict[str, int]:
    """How many users, rooms and messages the tenant's schema holds."""
    from django.contrib.auth import get_user_model

    from chat.models import Message, Room
    from tenants.context import run_in_schema

    def count() -> dict[str, int]:
        return {
            "users": get_user_model().objects.count(),
            "rooms": Room.objects.count(),
            "messages": Message.objects.count(),
        }

    return blocking(lambda: run_in_schema(schema_name, count))


def domain_exists(domain: str) -> bool:
    from tenants.models import Domain

    return blocking(lambda: Domain.objects.filter(domain=domain).exists())


# --- logging in on the platform host ---------------------------------------------------------


def test_platform_admin_logs_in_on_the_platform_host_with_a_public_claim(live_server, operator):
    response = login(live_server, PLATFORM_HOST, operator.username, operator.password)
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access"], options={"verify_signature": False})
    assert claims["tenant"] == "public"


def test_platform_admin_cannot_log_in_on_a_tenant_host(live_server, operator, tenant_a):
    response = login(live_server, tenant_a.domain, operator.username, operator.password)
    assert response.status_code == 401


# --- who may call the platform API -----------------------------------------------------------


PLATFORM_CALLS = [
    ("GET", "/api/tenants/", None),
    ("POST", "/api/tenants/", "create"),
    ("GET", "/api/tenants/{schema}/", None),
    ("PATCH", "/api/tenants/{schema}/", {"name": "Hijacked"}),
    ("DELETE", "/api/tenants/{schema}/", None),
]


@pytest.fixture(scope="module")
def outsiders(
    live_server: LiveServer, tenant_a: TenantInfo, django_db_blocker: Any
) -> dict[str, str | None]:
    """Tokens that must not get into the platform API, with the status each gets."""
    with django_db_blocker.unblock():
        return {
            "anonymous": None,
            "tenant_member": tokens_for(make_user_in(tenant_a))["access"],
            "tenant_admin": tokens_for(make_user_in(tenant_a, is_admin=True))["access"],
            "public_non_staff": tokens_for(make_platform_user(is_admin=False))["access"],
        }


OUTSIDER_STATUS = {
    "anonymous": 401,
    "tenant_member": 401,
    "tenant_admin": 401,
    "public_non_staff": 403,
}


@pytest.mark.parametrize("who", OUTSIDER_STATUS)
@pytest.mark.parametrize(
    ("method", "path", "body"), PLATFORM_CALLS, ids=[f"{m} {p}" for m, p, _ in PLATFORM_CALLS]
)
def test_platform_api_refuses_everyone_but_platform_admins(
    live_server, outsiders, tenant_c, who, method, path, body
):
    payload = tenant_body() if body == "create" else body
    with platform(live_server, outsiders[who]) as client:
        response = client.request(method, path.format(schema=tenant_c.schema_name), json=payload)
    assert response.status_code == OUTSIDER_STATUS[who], response.text
    assert tenant_row(tenant_c.schema_name) == {"name": "Initech_T", "is_active": True}
    if body == "create":
        assert tenant_row(payload["schema_name"]) is None


def test_tenant_admin_token_is_401_on_the_platform_api_even_with_its_own_schema_name(
    live_server, tenant_a
):
    token = tokens_for(make_user_in(tenant_a, is_admin=True))["access"]
    with platform(live_server, token) as client:
        assert client.get(f"/api/tenants/{tenant_a.schema_name}/").status_code == 401


def test_platform_admin_token_is_401_on_a_tenant_host(live_server, operator_token, tenant_a):
    with http(live_server, tenant_a.domain, operator_token) as client:
        assert client.get("/api/me/").status_code == 401
        assert client.get("/api/users/").status_code == 401
        assert client.get("/api/rooms/").status_code == 401


def test_tenant_endpoints_are_not_served_on_the_platform_host(live_server, operator_token):
    with platform(live_server, operator_token) as client:
        for path in ("/api/users/", "/api/rooms/", "/api/me/"):
            assert client.get(path).status_code == 404, path


def test_the_public_schema_is_not_a_tenant_of_the_platform_api(live_server, operator_token):
    with platform(live_server, operator_token) as client:
        assert client.get("/api/tenants/public/").status_code == 404
        assert client.patch("/api/tenants/public/", json={"name": "x"}).status_code == 404
        assert client.delete("/api/tenants/public/").status_code == 404
        listed = assert_paginated(client.get("/api/tenants/"))
    assert "public" not in {t["schema_name"] for t in listed}
    assert tenant_row("public")["is_active"] is True


def test_unknown_tenant_is_404(live_server, operator_token):
    with platform(live_server, operator_token) as client:
        assert client.get("/api/tenants/no_such_tenant/").status_code == 404
        assert client.patch("/api/tenants/no_such_tenant/", json={"name": "x"}).status_code == 404
        assert client.delete("/api/tenants/no_such_tenant/").status_code == 404


# --- validation of a new tenant --------------------------------------------------------------


@pytest.mark.parametrize(
    "schema_name",
    # "ok_name\n": a trailing newline passed `^...$` (and trimming made it another name).
    [
        *("Bad!", "public", "pg_x", "information_schema", "Upper", "1abc", "a", "x" * 51, ""),
        "ok_name\n",
    ],
)
def test_a_bad_or_reserved_schema_name_is_400_naming_schema_name(
    live_server, operator_token, schema_name
):
    body = tenant_body(schema_name=schema_name)
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), "schema_name")
    assert not domain_exists(body["domain"])


def test_a_taken_schema_name_is_400_naming_schema_name(live_server, operator_token, tenant_a):
    body = tenant_body(schema_name=tenant_a.schema_name)
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), "schema_name")
    assert not domain_exists(body["domain"])


@pytest.mark.parametrize(
    "domain",
    [
        "http://x.localhost",
        "x.localhost:8000",
        "x.localhost/path",
        "under_score.localhost",
        "-dash.localhost",
        "example.com",
        "",
    ],
    ids=["scheme", "port", "path", "underscore", "leading-dash", "not-served", "empty"],
)
def test_a_bad_domain_is_400_naming_domain(live_server, operator_token, domain):
    body = tenant_body(domain=domain)
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), "domain")
    assert tenant_row(body["schema_name"]) is None


@pytest.mark.parametrize("case", ["same", "upper-case"])
def test_a_taken_domain_is_400_naming_domain(live_server, operator_token, tenant_a, case):
    domain = tenant_a.domain if case == "same" else tenant_a.domain.upper()
    body = tenant_body(domain=domain)
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), "domain")
    assert tenant_row(body["schema_name"]) is None


@pytest.mark.parametrize(
    "admin",
    [
        {"username": "boss", "password": "short"},
        {"username": "has space", "password": "a-long-password"},
        {"username": "boss"},
        None,
    ],
    ids=["short-password", "bad-username", "no-password", "no-admin"],
)
def test_a_bad_first_admin_is_400_naming_admin(live_server, operator_token, admin):
    body = tenant_body(admin=admin)
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), "admin")
    assert tenant_row(body["schema_name"]) is None
    assert not schema_exists(body["schema_name"])


@pytest.mark.parametrize("missing", ["schema_name", "name", "domain", "admin"])
def test_a_missing_field_is_400_naming_it(live_server, operator_token, missing):
    body = tenant_body()
    del body[missing]
    with platform(live_server, operator_token) as client:
        assert_field_error(client.post("/api/tenants/", json=body), missing)


# --- provisioning is all or nothing ------------------------------------------------------------


def _provision_and_expect_failure(body: dict[str, Any]) -> BaseException:
    """Run the provisioning service in-process; it must raise."""
    from tenants.services import tenant_provision

    with pytest.raises(Exception) as raised:  # any failure must roll everything back
        blocking(
            lambda: tenant_provision(
                schema_name=body["schema_name"],
                name=body["name"],
                domain=body["domain"],
                admin_username=body["admin"]["username"],
                admin_password=body["admin"]["password"],
            )
        )
    return raised.value


def test_provisioning_that_fails_at_the_first_admin_leaves_no_schema_tenant_or_domain(
    monkeypatch,
):
    class AdminStepFailed(RuntimeError):
        pass

    def failing(**kwargs: Any) -> None:
        raise AdminStepFailed("the admin step failed")

    monkeypatch.setattr("tenants.services.provision_admin", failing)
    body = tenant_body()
    assert isinstance(_provision_and_expect_failure(body), AdminStepFailed)
    assert not schema_exists(body["schema_name"])
    assert tenant_row(body["schema_name"]) is None
    assert not domain_exists(body["domain"])


def test_provisioning_that_fails_on_a_taken_domain_leaves_no_schema_or_tenant(tenant_a):
    # The race the serializer cannot see: the domain was free when validated, taken at insert.
    body = tenant_body(domain=tenant_a.domain)
    _provision_and_expect_failure(body)
    assert not schema_exists(body["schema_name"])
    assert tenant_row(body["schema_name"]) is None


# --- the life of one tenant made through the API -----------------------------------------------


@pytest.fixture(scope="module")
def created(live_server: LiveServer, operator_token: str) -> dict[str, Any]:
    """One tenant made through POST /api/tenants/: the request body and the 201 body."""
    body = tenant_body(name="Hooli")
    with platform(live_server, operator_token) as client:
        response = client.post("/api/tenants/", json=body)
    assert response.status_code == 201, response.text
    return {"request": body, "response": response.json()}


def test_creating_a_tenant_answers_201_with_the_tenant(created):
    body, tenant = created["request"], created["response"]
    assert set(tenant) == TENANT_FIELDS
    assert tenant["schema_name"] == body["schema_name"]
    assert tenant["name"] == "Hooli"
    assert tenant["domain"] == body["domain"]
    assert tenant["is_active"] is True
    assert schema_exists(body["schema_name"])


def test_created_tenants_domain_answers_and_its_first_admin_logs_in_there(live_server, created):
    body = created["request"]
    domain, admin = body["domain"], body["admin"]
    with http(live_server, domain) as client:
        assert client.get("/api/me/").status_code == 401  # a known host, not a 404
    response = login(live_server, domain, admin["username"], admin["password"])
    assert response.status_code == 200, response.text
    access = response.json()["access"]
    assert jwt.decode(access, options={"verify_signature": False})["tenant"] == body["schema_name"]
    with http(live_server, domain, access) as client:
        me = client.get("/api/me/").json()
        assert (me["username"], me["is_admin"]) == (admin["username"], True)
        assert client.get("/api/users/").status_code == 200  # an admin of the new tenant
    # ...and only there: the platform and other tenants do not know that admin.
    assert (
        login(live_server, PLATFORM_HOST, admin["username"], admin["password"]).status_code == 401
    )


def test_tenants_list_is_paginated_and_includes_the_created_tenant(
    live_server, operator_token, created
):
    schema_name = created["request"]["schema_name"]
    found: dict[str, Any] | None = None
    with platform(live_server, operator_token) as client:
        url: str | None = "/api/tenants/"
        while url and found is None:
            response = client.get(url)
            page = assert_paginated(response)
            assert all(set(t) == TENANT_FIELDS for t in page)
            found = next((t for t in page if t["schema_name"] == schema_name), None)
            url = response.json()["next"]
            url = url.replace(live_server.url, "") if url else None
    assert found == created["response"]


def test_tenant_detail_shows_the_created_tenant(live_server, operator_token, created):
    schema_name = created["request"]["schema_name"]
    with platform(live_server, operator_token) as client:
        response = client.get(f"/api/tenants/{schema_name}/")
    assert response.status_code == 200
    assert response.json() == created["response"]


def test_patch_renames_and_relimits_a_tenant(live_server, operator_token, created):
    schema_name = created["request"]["schema_name"]
    with platform(live_server, operator_token) as client:
        response = client.patch(
            f"/api/tenants/{schema_name}/",
            json={"name": "Hooli XYZ", "rate_limit_per_second": 5, "rate_limit_burst": 7},
        )
        assert response.status_code == 200, response.text
        tenant = response.json()
        assert (tenant["name"], tenant["rate_limit_per_second"], tenant["rate_limit_burst"]) == (
            "Hooli XYZ",
            5,
            7,
        )
        assert client.get(f"/api/tenants/{schema_name}/").json()["name"] == "Hooli XYZ"
    assert tenant_row(schema_name) == {"name": "Hooli XYZ", "is_active": True}


def test_the_storage_quota_is_set_changed_and_reset_through_the_platform_api(
    live_server, operator_token, created
):
    schema_name = created["request"]["schema_name"]
    assert created["response"]["attachment_quota_bytes"] is None  # the platform default
    assert created["response"]["attachment_bytes_used"] == 0
    path = f"/api/tenants/{schema_name}/"
    with platform(live_server, operator_token) as client:
        changed = client.patch(path, json={"attachment_quota_bytes": 5_000_000})
        assert changed.status_code == 200, changed.text
        assert changed.json()["attachment_quota_bytes"] == 5_000_000
        assert client.get(path).json()["attachment_quota_bytes"] == 5_000_000
        reset = client.patch(path, json={"attachment_quota_bytes": None})
        assert reset.status_code == 200, reset.text
        assert reset.json()["attachment_quota_bytes"] is None
    assert quota_of(schema_name) is None


def test_a_tenant_is_created_with_its_own_storage_quota(live_server, operator_token):
    body = tenant_body(attachment_quota_bytes=0)
    with platform(live_server, operator_token) as client:
        response = client.post("/api/tenants/", json=body)
        assert response.status_code == 201, response.text
        assert response.json()["attachment_quota_bytes"] == 0
        bad = client.post("/api/tenants/", json=tenant_body(attachment_quota_bytes=-5))
    assert_field_error(bad, "attachment_quota_bytes")
    assert quota_of(body["schema_name"]) == 0


def quota_of(schema_name: str) -> int | None:
    from tenants.models import Tenant

    return blocking(
        lambda: Tenant.objects.values_list("attachment_quota_bytes", flat=True).get(
            schema_name=schema_name
        )
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "non_field_errors"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"rate_limit_burst": 0}, "rate_limit_burst"),
        ({"rate_limit_per_second": "fast"}, "rate_limit_per_second"),
        ({"is_active": "maybe"}, "is_active"),
        ({"attachment_quota_bytes": -1}, "attachment_quota_bytes"),
        ({"attachment_quota_bytes": "lots"}, "attachment_quota_bytes"),
        ({"attachment_quota_bytes": 1.5}, "attachment_quota_bytes"),
        ({"attachment_quota_bytes": True}, "attachment_quota_bytes"),
        ({"attachment_quota_bytes": 2**63}, "attachment_quota_bytes"),
        ({"attachment_quota_bytes": [1]}, "attachment_quota_bytes"),
    ],
    ids=[
        "empty",
        "blank-name",
        "long-name",
        "zero-burst",
        "bad-rate",
        "bad-is-active",
        "negative-quota",
        "text-quota",
        "fractional-quota",
        "boolean-quota",
        "quota-past-bigint",
        "list-quota",
    ],
)
def test_a_bad_change_is_400_naming_the_field(live_server, operator_token, tenant_c, body, field):
    with platform(live_server, operator_token) as client:
        response = client.patch(f"/api/tenants/{tenant_c.schema_name}/", json=body)
    assert_field_error(response, field)
    assert tenant_row(tenant_c.schema_name) == {"name": "Initech_T", "is_active": True}


async def test_deactivating_a_tenant_hides_its_hosts_closes_its_sockets_and_keeps_its_data(
    live_server, server_factory, operator_token, created
):
    body = created["request"]
    schema_name, domain, admin = body["schema_name"], body["domain"], body["admin"]
    pair = login(live_server, domain, admin["username"], admin["password"]).json()
    slug = unique("room_")
    with http(live_server, domain, pair["access"]) as client:
        assert client.post("/api/rooms/", json={"slug": slug}).status_code == 201
        sent = client.post(f"/api/rooms/{slug}/messages/", json={"message": "kept"})
        assert sent.status_code == 201
        me = UserInfo(
            id=client.get("/api/me/").json()["id"],
            username=admin["username"],
            password=admin["password"],
            tenant=TenantInfo(schema_name=schema_name, domain=domain, pk=0),
            is_admin=True,
        )

    second = server_factory()
    ws = await open_room_socket(second, me, slug, token=pair["access"])
    try:
        with platform(live_server, operator_token) as client:
            assert client.delete(f"/api/tenants/{schema_name}/").status_code == 204
        assert await close_code_within(ws) == 4401
    finally:
        await ws.close()

    with http(live_server, domain, pair["access"]) as client:
        assert client.get("/api/me/").status_code == 404
        token = client.post("/api/auth/token/", json=admin)
        assert token.status_code == 404
    with platform(live_server, operator_token) as client:
        assert client.get(f"/api/tenants/{schema_name}/").json()["is_active"] is False
    assert rows_in(schema_name) == {"users": 1, "rooms": 1, "messages": 1}  # the data stays

    with platform(live_server, operator_token) as client:
        again = client.patch(f"/api/tenants/{schema_name}/", json={"is_active": True})
    assert again.status_code == 200, again.text
    assert again.json()["is_active"] is True
    assert login(live_server, domain, admin["username"], admin["password"]).status_code == 200
    with http(live_server, domain, pair["access"]) as client:
        history = client.get(f"/api/rooms/{slug}/messages/")
    assert history.status_code == 200
    assert [m["message"] for m in history.json()] == ["kept"]

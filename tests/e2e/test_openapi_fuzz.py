"""Property-based runs of the OpenAPI documents against the live app (schemathesis 4).

What it covers:
- The tenant host's served document (`GET /api/schema/` with `Host: <tenant domain>`): every
  operation in it is called on a live uvicorn server of this module with a tenant admin's bearer
  token, with requests Hypothesis generates from the document, valid ones (positive mode) and
  invalid ones (negative mode), at most MAX_EXAMPLES of each per operation. It runs twice:
  with generated path parameters, and with the path parameters pinned to objects that exist
  (a private room the admin belongs to, a member of it, a plain user), so that generated
  bodies and query strings reach the code behind the 404.
- The platform host's served document (`Host: localhost`), with a platform admin's token
  (`test_platform_document_describes_the_platform_api` checks it describes `/api/tenants/`),
  and the document drf-spectacular makes for `config.urls_public` in-process, with the path
  parameters pinned to a tenant made for it.
- Two checks on every response: `not_a_server_error` (no 5xx) and
  `response_schema_conformance` (the body of a documented status code matches its schema).
  Undocumented status codes (the documents list no 401, 403, 404 or 429) are not judged here;
  the permission tests judge them. Each run also asserts that it reached the app as an admin
  (some 2xx answers), so a wrong Host or token cannot make it pass by answering 404 to all.

Cases are derandomized: a failure found once is found again. A failing case is reported with
the request that reproduces it (curl) and the response. The runs use tenants made for them,
so the users, rooms and messages they create, change or deactivate touch no other test; the
fuzzer never changes or deactivates its own admin (tests/accounts/test_admin_api.py does).

The operations are driven here with `APIOperation.as_strategy` and Hypothesis' `@given`, not
with `schemathesis.pytest.from_fixture(...).parametrize()`: that integration (4.32.5) reads
`request.node._nodeid`, which pytest 9 no longer has (AttributeError at the first case).
The last tests keep requests the generators never produced but a directed probe did.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api_helpers import PLATFORM_HOST, bearer, make_platform_user
from tests.conftest import (
    LiveServer,
    TenantInfo,
    make_user_in,
    start_server,
    tokens_for,
    unique,
)

MAX_EXAMPLES = 15
# One test calls every operation of a document (about 40) with 2 x MAX_EXAMPLES requests: 154
# to 322 s on a loaded 2-core machine, against the suite's 120 s per test. pytest-timeout's
# SIGALRM then lands inside one Hypothesis example, which passes when replayed, and the run
# reported "unreliable results" for whatever operation was running (POST /api/users/, POST
# /api/auth/token/): a false failure, and a timeout that did not stop the test anyway. The
# budget of these tests is their workload's, with the margin the suite gives others.
pytestmark = pytest.mark.timeout(900)
CHECKS = [not_a_server_error, response_schema_conformance]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


@dataclass
class FuzzTarget:
    """Where a run sends its requests, as whom, the objects that exist there, and a tally of
    the answers (operation label, status code)."""

    server: LiveServer
    host: str
    token: str
    admin_id: int
    existing: dict[str, Any] = field(default_factory=dict)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def headers(self) -> dict[str, str]:
        return {"Host": self.host, **bearer(self.token)}

    def successes(self) -> set[str]:
        return {label for (label, status), _ in self.answers.items() if 200 <= status < 300}


def served_document(target: FuzzTarget) -> Any:
    """The document the live server serves on the target's host, aimed at that host."""
    schema = schemathesis.openapi.from_url(
        f"{target.server.url}/api/schema/",
        config=schemathesis.Config(),
        headers={"Host": target.host, "Accept": "application/json"},
        timeout=10,
    )
    schema.config.update(base_url=target.server.url, headers=target.headers)
    return schema


def platform_document_in_process(target: FuzzTarget) -> Any:
    """What `/api/schema/` should serve on the platform host: the document of its urlconf."""
    from drf_spectacular.generators import SchemaGenerator

    document = SchemaGenerator(urlconf="config.urls_public").get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(
        httpx.Response(200, json=document).json(),  # plain JSON types, as if served
        config=schemathesis.Config(),
    )
    schema.config.update(base_url=target.server.url, headers=target.headers)
    return schema


def _spare_the_admin(case: Any, target: FuzzTarget) -> None:
    """Changes to the fuzzing admin itself go to a plain user instead (see the docstring)."""
    if case.method.upper() in {"PATCH", "DELETE"} and case.path_parameters:
        for name in ("id", "user_id"):
            if case.path_parameters.get(name) == target.admin_id:
                case.path_parameters[name] = target.existing.get("id", 0)


def fuzz(
    schema: Any,
    target: FuzzTarget,
    *,
    pin: bool = False,
    skip: Callable[[Any], bool] = lambda operation: False,
) -> list[str]:
    """Call every operation of `schema` with generated valid and invalid requests; returns the
    failures, each with the request that reproduces it and the response."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if skip(operation):
            continue
        names = {parameter.name for parameter in operation.path_parameters}
        pinned = {k: v for k, v in target.existing.items() if k in names} if pin else None
        for mode in GenerationMode:

            @given(case=operation.as_strategy(mode, path_parameters=pinned))
            @FUZZ_SETTINGS
            def run(case: Any) -> None:
                _spare_the_admin(case, target)
                response = case.call()
                target.answers[(case.operation.label, response.status_code)] += 1
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to make invalid (e.g. no parameters, or all of them pinned)
            except (FailureGroup, Exception) as exc:  # a check failed: report them all
                failures.append(f"{operation.label} ({mode.value}):\n{exc}")
    return failures


def assert_no_failures(failures: list[str], target: FuzzTarget) -> None:
    assert not failures, "\n\n".join(failures)
    assert target.successes(), f"no 2xx at all, the run did not reach the app: {target.answers}"


# --- targets -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[LiveServer]:
    """One admin writes hundreds of times a second here: far past a user's REST write and room
    budgets (tests/chat/test_write_budgets.py tests those), which would answer most cases 429
    before they reach the code the fuzzer is after."""
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        CHAT_RATE_PER_SECOND="100000",
        CHAT_RATE_BURST="100000",
        ROOM_CREATE_RATE="100000/s",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tenant_target(
    live_server: LiveServer, make_tenant: Callable[[], TenantInfo], django_db_blocker: Any
) -> FuzzTarget:
    tenant = make_tenant()
    with django_db_blocker.unblock():
        admin = make_user_in(tenant, is_admin=True)
        member = make_user_in(tenant)
        plain = make_user_in(tenant)
        token = tokens_for(admin)["access"]
    room = unique("fuzz_")
    headers = {"Host": tenant.domain, **bearer(token)}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=10) as client:
        created = client.post("/api/rooms/", json={"slug": room, "is_private": True})
        assert created.status_code == 201, created.text
        added = client.post(f"/api/rooms/{room}/members/", json={"user_id": member.id})
        assert added.status_code == 201, added.text
        sent = client.post(f"/api/rooms/{room}/messages/", json={"message": "seed"})
        assert sent.status_code == 201, sent.text
    return FuzzTarget(
        server=live_server,
        host=tenant.domain,
        token=token,
        admin_id=admin.id,
        # `message_id`: the seed message, so threads and reactions get past their 404 too.
        existing={
            "slug": room,
            "user_id": member.id,
            "id": plain.id,
            "message_id": sent.json()["id"],
        },
    )


@pytest.fixture(scope="module")
def platform_target(
    live_server: LiveServer, make_tenant: Callable[[], TenantInfo], django_db_blocker: Any
) -> FuzzTarget:
    tenant = make_tenant()  # the pinned `schema_name`: renamed, re-limited, deactivated
    with django_db_blocker.unblock():
        operator = make_platform_user(is_admin=True)
        token = tokens_for(operator)["access"]
    return FuzzTarget(
        server=live_server,
        host=PLATFORM_HOST,
        token=token,
        admin_id=operator.id,
        existing={"schema_name": tenant.schema_name},
    )


# --- runs ----------------------------------------------------------------------------------


def test_tenant_api_answers_no_5xx_and_matches_its_document(tenant_target: FuzzTarget) -> None:
    failures = fuzz(served_document(tenant_target), tenant_target)
    assert_no_failures(failures, tenant_target)


def test_tenant_api_on_existing_objects_answers_no_5xx_and_matches_its_document(
    tenant_target: FuzzTarget,
) -> None:
    # Deleting the pinned room would leave the operations after it nothing to work on; the
    # run above deletes generated slugs, and tests/chat/test_admin_rooms.py real rooms.
    def deletes_the_room(operation: Any) -> bool:
        return operation.method.upper() == "DELETE" and operation.path == "/api/rooms/{slug}/"

    failures = fuzz(served_document(tenant_target), tenant_target, pin=True, skip=deletes_the_room)
    assert_no_failures(failures, tenant_target)
    reached = tenant_target.successes()
    for label in (
        "PATCH /api/rooms/{slug}/",
        "GET /api/rooms/{slug}/messages/",
        "GET /api/rooms/{slug}/messages/{message_id}/replies/",
        "POST /api/rooms/{slug}/messages/{message_id}/reactions/",
        "POST /api/rooms/{slug}/attachments/",
    ):
        assert label in reached, f"{label} never answered 2xx on the pinned room"


def test_platform_api_served_document_answers_no_5xx_and_matches_itself(
    platform_target: FuzzTarget,
) -> None:
    failures = fuzz(served_document(platform_target), platform_target)
    assert not failures, "\n\n".join(failures)


def test_platform_api_answers_no_5xx_and_matches_the_document_of_its_urls(
    platform_target: FuzzTarget,
) -> None:
    schema = platform_document_in_process(platform_target)
    failures = fuzz(schema, platform_target) + fuzz(schema, platform_target, pin=True)
    assert_no_failures(failures, platform_target)
    assert "GET /api/tenants/" in platform_target.successes()


def test_platform_document_describes_the_platform_api(live_server: LiveServer) -> None:
    response = httpx.get(
        f"{live_server.url}/api/schema/",
        headers={"Host": PLATFORM_HOST, "Accept": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200
    paths = set(response.json()["paths"])
    assert {"/api/tenants/", "/api/tenants/{schema_name}/"} <= paths
    assert "/api/users/" not in paths  # tenant endpoints answer 404 on the platform host


# --- found by probing the generators' blind spot ------------------------------------------------
# schemathesis (4.32.5) never put a NUL byte into a path parameter here, even at 100 examples an
# operation; a directed probe of the same operations did. Kept as the exact failing requests.

NUL_IN_PATH = [
    (PLATFORM_HOST, "GET", "/api/tenants/%00/", None),
    (PLATFORM_HOST, "PATCH", "/api/tenants/%00/", {"name": "x"}),
    (PLATFORM_HOST, "DELETE", "/api/tenants/%00/", None),
    ("tenant", "GET", "/api/rooms/%00/", None),
    ("tenant", "PATCH", "/api/rooms/%00/", {"name": "x"}),
    ("tenant", "DELETE", "/api/rooms/%00/", None),
    ("tenant", "GET", "/api/rooms/%00/members/", None),
    ("tenant", "POST", "/api/rooms/%00/members/", {"user_id": 1}),
    ("tenant", "DELETE", "/api/rooms/%00/members/1/", None),
    ("tenant", "GET", "/api/rooms/%00/messages/", None),
    ("tenant", "POST", "/api/rooms/%00/messages/", {"message": "hi"}),
]


@pytest.mark.parametrize(
    ("host", "method", "path", "body"),
    NUL_IN_PATH,
    ids=[f"{method} {path}" for _, method, path, _ in NUL_IN_PATH],
)
def test_a_nul_byte_in_a_path_parameter_is_a_404_not_a_server_error(
    tenant_target: FuzzTarget, platform_target: FuzzTarget, host, method, path, body
) -> None:
    target = platform_target if host == PLATFORM_HOST else tenant_target
    response = httpx.request(
        method, f"{target.server.url}{path}", headers=target.headers, json=body, timeout=10
    )
    assert response.status_code == 404, (response.status_code, response.text)

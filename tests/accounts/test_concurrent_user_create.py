"""Admins creating (or renaming onto) one username at the same moment, through two uvicorn
pods: one wins, every other request is the documented 400 naming `username`, never a 500.
The serializer's uniqueness check cannot see a concurrent request's uncommitted row; the
UNIQUE index can, and its IntegrityError is the answer."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api_helpers import bearer
from tests.conftest import (
    LiveServer,
    TenantInfo,
    make_user_in,
    start_pods,
    stop_pods,
    tokens_for,
    unique,
)
from tests.realtime_helpers import in_tenant

ROUNDS = 10
AT_ONCE = 8
# A create hashes its password first (PBKDF2, about a second of CPU on a busy machine), so
# fewer creates race, each given a generous answer time; that hash is also the window in
# which every one of them passes the serializer's check.
CREATES_AT_ONCE = 4
CREATE_ROUNDS = 5
ANSWER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def pods(
    tmp_path_factory: pytest.TempPathFactory, django_db_setup: None
) -> Iterator[list[LiveServer]]:
    # One admin sends every round's writes (80 renames in a few seconds): the per-user
    # REST write budget (burst 20) is not what these races test, and answered 429s.
    budget = {"CHAT_RATE_PER_SECOND": "1000", "CHAT_RATE_BURST": "1000"}
    started = start_pods(tmp_path_factory.mktemp("user_races"), 2, **budget)
    yield started
    stop_pods(started)


async def _all_at_once(
    pods: list[LiveServer], tenant: TenantInfo, token: str, requests: list[tuple[str, str, Any]]
) -> list[httpx.Response]:
    """Each (method, path, json) sent at the same moment, alternately to each pod."""
    headers = {"Host": tenant.domain, **bearer(token)}
    clients = [
        httpx.AsyncClient(base_url=p.url, headers=headers, timeout=ANSWER_TIMEOUT) for p in pods
    ]
    start = asyncio.Event()

    async def one(n: int, method: str, path: str, body: Any) -> httpx.Response:
        await start.wait()
        return await clients[n % len(clients)].request(method, path, json=body)

    try:
        tasks = [asyncio.create_task(one(n, *request)) for n, request in enumerate(requests)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.wait_for(asyncio.gather(*tasks), timeout=2 * ANSWER_TIMEOUT)
    finally:
        for client in clients:
            await client.aclose()


def _users_without_password(count: int) -> list[int]:
    """`count` new users in one INSERT (no password: hashing one takes a second here)."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    made = User.objects.bulk_create([User(username=unique("renamed_")) for _ in range(count)])
    return [user.pk for user in made]


def _assert_one_won(answers: list[httpx.Response], won: int) -> None:
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {won: 1, 400: len(answers) - 1}, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json() == {"username": ["A user with that username already exists."]}


async def test_concurrent_creates_of_one_username_make_one_user_and_400s(
    pods: list[LiveServer], tenant_a: TenantInfo
) -> None:
    admin = make_user_in(tenant_a, is_admin=True)
    token = tokens_for(admin)["access"]
    for _ in range(CREATE_ROUNDS):
        name = unique("same_")
        body = {"username": name, "password": f"pw-{unique('')}-long"}
        answers = await _all_at_once(
            pods, tenant_a, token, [("POST", "/api/users/", body)] * CREATES_AT_ONCE
        )
        _assert_one_won(answers, 201)


async def test_concurrent_renames_onto_one_username_leave_one_holder_and_400s(
    pods: list[LiveServer], tenant_a: TenantInfo
) -> None:
    admin = make_user_in(tenant_a, is_admin=True)
    token = tokens_for(admin)["access"]
    ids = in_tenant(tenant_a, lambda: _users_without_password(AT_ONCE))
    for _ in range(ROUNDS):  # each round, the same users race for a new name
        name = unique("taken_")
        renames = [("PATCH", f"/api/users/{pk}/", {"username": name}) for pk in ids]
        _assert_one_won(await _all_at_once(pods, tenant_a, token, renames), 200)

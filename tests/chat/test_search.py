"""Full-text search, `GET /api/search/` (PROTOCOL.md section 6), over a real uvicorn process.

Every test's messages carry a word of their own (`tag`), so the session's shared tenants can
hold other tests' messages without changing what a search here finds. Messages are sent
through REST or written straight into the tenant's schema; edits and deletes go through the
services the WebSocket `edit` / `delete` frames call.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from tests.api_helpers import assert_field_error, http
from tests.conftest import (
    LiveServer,
    TenantInfo,
    UserInfo,
    blocking,
    make_user_in,
    tokens_for,
    unique,
)
from tests.realtime_helpers import CHAT_MESSAGE_FIELDS

# --- helpers ---------------------------------------------------------------------------------


def new_tag() -> str:
    """A word no other message contains (letters only: one lexeme for the 'simple' parser)."""
    return "tag" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:12])


def search(server: LiveServer, user: UserInfo, **params: Any) -> httpx.Response:
    with http(server, user.tenant.domain, tokens_for(user)["access"]) as c:
        return c.get("/api/search/", params=params)


def found(server: LiveServer, user: UserInfo, **params: Any) -> list[dict[str, Any]]:
    response = search(server, user, **params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    return body


def ids(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["id"] for frame in frames]


def post(server: LiveServer, user: UserInfo, slug: str, text: str) -> dict[str, Any]:
    """Send `text` to room `slug` over REST (creating the public room first if it is
    missing); returns the 201's frame."""
    with http(server, user.tenant.domain, tokens_for(user)["access"]) as c:
        if c.get(f"/api/rooms/{slug}/").status_code == 404:
            created = c.post("/api/rooms/", json={"slug": slug})
            assert created.status_code == 201, created.text
        response = c.post(f"/api/rooms/{slug}/messages/", json={"message": text})
        assert response.status_code == 201, response.text
        return response.json()


def private_room(owner: UserInfo, *members: UserInfo) -> str:
    """A private room of `owner` (and `members`), made through the services."""
    from chat.models import Room
    from chat.services import Actor, room_create, room_member_add
    from tenants.context import run_in_schema

    slug = unique("priv_")
    schema = owner.tenant.schema_name

    def make() -> None:
        actor = Actor(id=owner.id, username=owner.username, is_admin=True)
        room_create(schema_name=schema, actor=actor, slug=slug, name="", is_private=True)
        room = run_in_schema(schema, lambda: Room.objects.get(slug=slug))
        for member in members:
            room_member_add(schema_name=schema, room=room, user_id=member.id)

    blocking(make)
    return slug


def change(user: UserInfo, frame: dict[str, Any], body: str | None) -> None:
    """Edit (`body`) or delete (None) the message of `frame` as `user`, through the services
    that the WebSocket `edit` / `delete` frames call."""
    from chat.models import Room
    from chat.services import Actor, RoomRef, message_delete, message_edit
    from tenants.context import run_in_schema

    schema = user.tenant.schema_name
    room = blocking(lambda: run_in_schema(schema, lambda: Room.objects.get(slug=frame["room"])))
    ref = RoomRef(id=room.pk, slug=room.slug, is_private=room.is_private)
    actor = Actor(id=user.id, username=user.username, is_admin=user.is_admin)
    if body is None:
        async_to_sync(message_delete)(
            schema_name=schema, room=ref, actor=actor, message_id=frame["id"]
        )
    else:
        async_to_sync(message_edit)(
            schema_name=schema, room=ref, actor=actor, message_id=frame["id"], body=body
        )


INSERT_BATCH = 1000


def insert_rows(tenant: TenantInfo, slug: str, user: UserInfo, count: int, body_sql: str) -> None:
    """`count` messages in one INSERT ... SELECT (the seq trigger still numbers them);
    `body_sql` is an SQL expression of `i` (1..count)."""
    from django.db import connection

    from chat.models import Room
    from tenants.context import run_in_schema

    def insert() -> None:
        room, _ = Room.objects.get_or_create(slug=slug)
        with connection.cursor() as cursor:
            # At most INSERT_BATCH rows a statement (each one its own transaction): the seq
            # trigger updates the room's row once per message, and PostgreSQL walks every
            # version that one transaction made of a row to find the newest, so one INSERT of
            # 30,000 messages took over 120 s of CPU (quadratic); batches keep it linear.
            for first in range(1, count + 1, INSERT_BATCH):
                cursor.execute(
                    f"INSERT INTO chat_message (room_id, user_id, body) "
                    f"SELECT %s, %s, {body_sql} FROM generate_series(%s, %s) AS i",
                    [room.pk, user.id, first, min(first + INSERT_BATCH - 1, count)],
                )

    blocking(lambda: run_in_schema(tenant.schema_name, insert))


# --- finding ---------------------------------------------------------------------------------


def test_search_finds_a_message_by_a_whole_word_and_by_a_prefix(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    hit = post(live_server, alice, slug, f"{tag} the Deployment finished")
    post(live_server, alice, slug, f"{tag} nothing to see")

    assert ids(found(live_server, alice, q=f"{tag} deployment")) == [hit["id"]]
    assert ids(found(live_server, alice, q=f"{tag} deploy")) == [hit["id"]]  # a prefix
    assert ids(found(live_server, alice, q=f"DEPLOY {tag[:-2]}")) == [hit["id"]]  # any case
    assert found(live_server, alice, q=f"{tag} ployment") == []  # prefixes, not infixes
    assert found(live_server, alice, q=f"{tag} deployments") == []  # every word must match


def test_search_results_are_chat_message_frames_with_their_room(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    sent = post(live_server, alice, slug, f"hello {tag}")

    [frame] = found(live_server, alice, q=tag)
    assert set(frame) == CHAT_MESSAGE_FIELDS
    assert frame == {**sent, "type": "chat.message"}
    assert frame["room"] == slug and frame["user"] == alice.username


def test_search_results_are_best_first_then_newest_first(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    once_old = post(live_server, alice, slug, f"{tag} once, older")
    thrice = post(live_server, alice, slug, f"{tag} {tag} and {tag} again")
    once_new = post(live_server, alice, slug, f"{tag} once, newer")
    twice = post(live_server, alice, slug, f"{tag} {tag}")

    assert ids(found(live_server, alice, q=tag)) == [
        thrice["id"],
        twice["id"],
        once_new["id"],
        once_old["id"],
    ]


def test_search_never_finds_another_tenants_messages(live_server, tenant_a, tenant_b):
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_b)
    tag, slug = new_tag(), unique("s_")  # the same word, and the same room name, in both
    in_a = post(live_server, alice, slug, f"{tag} quarterly report")
    in_b = post(live_server, bob, slug, f"{tag} quarterly report")

    assert ids(found(live_server, alice, q=f"{tag} quarterly")) == [in_a["id"]]
    assert ids(found(live_server, bob, q=f"{tag} quarterly")) == [in_b["id"]]
    assert ids(found(live_server, bob, q=tag, room=slug)) == [in_b["id"]]


def test_private_room_messages_are_found_only_by_its_members(live_server, tenant_a):
    owner, member, outsider = (make_user_in(tenant_a) for _ in range(3))
    admin = make_user_in(tenant_a, is_admin=True)
    tag = new_tag()
    slug = private_room(owner, member)
    secret = post(live_server, member, slug, f"{tag} secret plans")
    public = post(live_server, outsider, unique("s_"), f"{tag} public plans")

    assert set(ids(found(live_server, member, q=tag))) == {secret["id"], public["id"]}
    assert ids(found(live_server, outsider, q=tag)) == [public["id"]]
    # A tenant admin reads (and so finds) only the private rooms they belong to, as in the
    # room list.
    assert ids(found(live_server, admin, q=tag)) == [public["id"]]
    assert search(live_server, outsider, q=tag, room=slug).status_code == 404


def test_deleted_messages_are_never_found(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    kept = post(live_server, alice, slug, f"{tag} keep me")
    gone = post(live_server, alice, slug, f"{tag} delete me")
    assert set(ids(found(live_server, alice, q=tag))) == {kept["id"], gone["id"]}

    change(alice, gone, None)

    assert ids(found(live_server, alice, q=tag)) == [kept["id"]]
    assert found(live_server, alice, q=f"{tag} delete") == []
    assert found(live_server, alice, q=f"{tag} delete", room=slug) == []


def test_an_edited_message_is_found_by_its_new_words_and_not_its_old_ones(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    sent = post(live_server, alice, slug, f"{tag} meeting on monday")

    change(alice, sent, f"{tag} meeting moved to thursday")

    assert found(live_server, alice, q=f"{tag} monday") == []
    [frame] = found(live_server, alice, q=f"{tag} thurs")
    assert frame["id"] == sent["id"]
    assert frame["message"] == f"{tag} meeting moved to thursday"
    assert frame["edited_at"] is not None


def test_room_filter_answers_only_that_rooms_messages(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, here, there = new_tag(), unique("s_"), unique("s_")
    mine = post(live_server, alice, here, f"{tag} here")
    other = post(live_server, alice, there, f"{tag} there")

    assert set(ids(found(live_server, alice, q=tag))) == {mine["id"], other["id"]}
    assert ids(found(live_server, alice, q=tag, room=here)) == [mine["id"]]
    assert ids(found(live_server, alice, q=tag, room=there)) == [other["id"]]


def test_room_filter_of_a_missing_room_and_of_an_unreadable_one_are_the_same_404(
    live_server, tenant_a
):
    owner, outsider = make_user_in(tenant_a), make_user_in(tenant_a)
    slug = private_room(owner)
    post(live_server, owner, slug, "private words")

    unreadable = search(live_server, outsider, q="private", room=slug)
    missing = search(live_server, outsider, q="private", room=unique("nope_"))
    assert unreadable.status_code == missing.status_code == 404
    assert unreadable.json() == missing.json()


def test_limit_defaults_to_20_and_more_than_100_is_100(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    insert_rows(tenant_a, slug, alice, 120, f"'{tag} bulk ' || i")

    assert len(found(live_server, alice, q=tag)) == 20
    assert len(found(live_server, alice, q=tag, limit=7)) == 7
    assert len(found(live_server, alice, q=tag, limit=10_000)) == 100
    # The same rank everywhere: newest first.
    frames = found(live_server, alice, q=tag, limit=100)
    assert ids(frames) == sorted(ids(frames), reverse=True)


def test_only_the_newest_matches_of_the_rank_window_are_ranked(
    live_server, server_factory, tenant_a
):
    server = server_factory(CHAT_SEARCH_RANK_WINDOW="2")
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    best_but_old = post(server, alice, slug, f"{tag} {tag} {tag}")
    middle = post(server, alice, slug, f"{tag} {tag}")
    newest = post(server, alice, slug, f"{tag} once")

    # CHAT_SEARCH_RANK_WINDOW=2: the 2 newest matches are ranked; the best one is older. The
    # default window (10,000) ranks all three.
    assert ids(found(server, alice, q=tag)) == [middle["id"], newest["id"]]
    assert ids(found(live_server, alice, q=tag)) == [
        best_but_old["id"],
        middle["id"],
        newest["id"],
    ]


# --- refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "!!! ... ---"},  # no searchable word
        {"q": "a\x00b"},
    ],
    ids=["missing", "empty", "blank", "201 chars", "punctuation only", "NUL byte"],
)
def test_a_bad_q_is_400_naming_q(live_server, tenant_a, params):
    response = search(live_server, make_user_in(tenant_a), **params)
    assert_field_error(response, "q")


def test_a_q_of_200_characters_is_searched(live_server, tenant_a):
    alice = make_user_in(tenant_a)
    tag, slug = new_tag(), unique("s_")
    sent = post(live_server, alice, slug, f"{tag} {'a' * 190}")
    q = f"{tag} {'a' * (199 - len(tag))}"
    assert len(q) == 200
    assert ids(found(live_server, alice, q=q)) == [sent["id"]]


@pytest.mark.parametrize("room", ["", "bad room", "a" * 65, "x/y", "caf\u00e9", "general\n"])
def test_a_room_outside_the_slug_pattern_is_400_naming_room(live_server, tenant_a, room):
    response = search(live_server, make_user_in(tenant_a), q="hello", room=room)
    assert_field_error(response, "room")


@pytest.mark.parametrize("limit", ["", "0", "-1", "x", "1.5"])
def test_a_bad_limit_is_400_naming_limit(live_server, tenant_a, limit):
    response = search(live_server, make_user_in(tenant_a), q="hello", limit=limit)
    assert_field_error(response, "limit")


def test_search_without_a_token_is_401(live_server, tenant_a):
    with http(live_server, tenant_a.domain) as c:
        assert c.get("/api/search/", params={"q": "hello"}).status_code == 401


def test_search_is_in_the_openapi_document(live_server, tenant_a):
    with http(live_server, tenant_a.domain) as c:
        response = c.get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    operation = response.json()["paths"]["/api/search/"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"q", "room", "limit"}


# --- the index -------------------------------------------------------------------------------


def test_the_search_query_uses_the_gin_index(make_tenant):
    """With 20,000 messages and fresh statistics the planner picks the partial GIN index on
    its own (no `enable_seqscan = off`), for a search of every readable room and of one."""
    from django.db import connection

    from chat.models import Room
    from chat.search import search_messages, search_sql, search_terms
    from chat.services import Actor
    from tenants.context import run_in_schema

    tenant = make_tenant()
    user = make_user_in(tenant)
    filler = "'lorem ipsum dolor ' || md5(i::text) || ' sit amet ' || (i %% 97)"
    insert_rows(tenant, "big", user, 20_000, filler)
    insert_rows(tenant, "big", user, 3, "'the rare zyzzyva ' || i")
    actor = Actor(id=user.id, username=user.username, is_admin=False)

    def plans() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_message")
        room = Room.objects.get(slug="big")
        out = []
        for scope in (None, room):
            terms = search_terms("zyzzy")
            assert len(search_messages(actor=actor, terms=terms, room=scope, limit=20)) == 3
            sql, params = search_sql(actor=actor, terms=terms, room=scope, limit=20)
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN {sql}", params)
                out.append("\n".join(row[0] for row in cursor.fetchall()))
        return out

    for plan in blocking(lambda: run_in_schema(tenant.schema_name, plans)):
        assert "chat_message_search_gin" in plan, plan
        assert "Seq Scan on chat_message" not in plan, plan


# --- budget and timeout ----------------------------------------------------------------------


def test_searches_past_the_users_budget_are_429_and_other_users_still_search(
    server_factory, tenant_a
):
    server = server_factory(SEARCH_RATE="3/min")
    alice, bob = make_user_in(tenant_a), make_user_in(tenant_a)
    tag = new_tag()
    assert search(server, alice, q="").status_code == 400  # refused input costs no token
    answers = [search(server, alice, q=tag) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert search(server, bob, q=tag).status_code == 200


def test_a_search_over_the_timeout_is_cancelled_503_and_the_server_goes_on(
    server_factory, tenant_a
):
    server = server_factory(SEARCH_TIMEOUT_MS="1")
    alice = make_user_in(tenant_a)
    tag = new_tag()
    # 30,000 matches to rank: far more than 1 ms of work.
    insert_rows(tenant_a, unique("slow_"), alice, 30_000, f"'{tag} ' || i")
    slow = search(server, alice, q=tag)
    assert slow.status_code == 503, slow.text
    assert "took too long" in slow.json()["detail"]
    assert int(slow.headers["Retry-After"]) >= 1
    assert search(server, alice, q=new_tag()).status_code in (200, 503)  # still answering

    # In this process: the timeout is the transaction's own, not left on the connection.
    from django.db import connection
    from django.test import override_settings

    from chat.search import SearchTimeout, search_messages, search_terms
    from chat.services import Actor
    from tenants.context import run_in_schema

    def run() -> str:
        actor = Actor(id=alice.id, username=alice.username, is_admin=False)
        with override_settings(SEARCH_TIMEOUT_MS=1), pytest.raises(SearchTimeout):
            search_messages(actor=actor, terms=search_terms(tag), room=None, limit=20)
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            return cursor.fetchone()[0]

    assert blocking(lambda: run_in_schema(tenant_a.schema_name, run)) == "0"

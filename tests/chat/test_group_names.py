"""Channel-layer group names (`chat/events.py`): one (schema, kind, key), one name.

A group name is the only thing that keeps one tenant's room traffic and presence away from
another's on the shared channel layer, so two different triples must never give the same
name, whatever the lengths and characters of schema names and room slugs.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from channels.layers import BaseChannelLayer
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat import events
from tests.conftest import LiveServer, TenantInfo, _make_tenant, blocking, make_user_in, unique
from tests.realtime_helpers import Sockets, fence, frames_until, is_message, of_type, send

KINDS = {
    "room": events.room_group_name,
    "user": events.user_group_name,
    "notify": events.notify_group_name,
    "tenant": lambda schema, _key: events.tenant_group_name(schema),
}
PLAIN = re.compile(r"t\.([^.]*)\.([^.]*)\.([^.]*)")
CHANNELS_SAFE = re.compile(r"[A-Za-z0-9_.-]+")

# Valid schema names (tenants/serializers.py: a letter, then 1 to 49 of [a-z0-9_]) of two
# tenants, the second being the first 30 characters of the first.
LONG_SCHEMA = "groupnames_collision_probe_aaa_tenant_long_x"  # 44 characters
SHORT_SCHEMA = LONG_SCHEMA[:30]
LONG_SLUG = "a-room-whose-slug-is-long-enough-to-need-a-hashed-group-name"  # 60 characters


def group_name(schema: str, kind: str, key: str) -> str:
    if kind == "tenant":
        key = "all"
    return str(KINDS[kind](schema, key))


schemas = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{1,62}", fullmatch=True),
    st.sampled_from([LONG_SCHEMA, SHORT_SCHEMA, "t", "h", "a.b", "room", "x" * 63]),
    st.text(max_size=70),
)
slugs = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    st.from_regex(r"h[0-9a-f]{48}", fullmatch=True),
    st.text(max_size=80),
)
triples = st.one_of(
    st.tuples(schemas, st.just("room"), slugs),
    st.tuples(schemas, st.sampled_from(["user", "notify"]), st.integers(1, 10**12).map(str)),
    st.tuples(schemas, st.just("tenant"), st.just("all")),
)


def assert_valid_channels_group(name: str) -> None:
    assert len(name) < 100, name
    assert CHANNELS_SAFE.fullmatch(name), name
    assert BaseChannelLayer().require_valid_group_name(name)


@hypothesis_settings(max_examples=400, deadline=None)
@given(triple=triples)
@example(triple=(LONG_SCHEMA, "room", LONG_SLUG))
def test_a_group_name_is_valid_and_reads_back_as_no_other_schema_kind_and_key(
    triple: tuple[str, str, str],
) -> None:
    schema, kind, key = triple
    name = group_name(schema, kind, key)
    assert_valid_channels_group(name)
    # A name of the plain form is the plain name of exactly one triple: if it reads as some
    # other (schema, kind, key), that triple's room would share this group.
    plain = PLAIN.fullmatch(name)
    if plain is not None:
        assert plain.groups() == (schema, kind, key), (triple, name)


@hypothesis_settings(max_examples=200, deadline=None)
@given(many=st.lists(triples, min_size=2, max_size=50, unique=True))
def test_different_schema_kind_and_key_never_share_a_group_name(
    many: list[tuple[str, str, str]],
) -> None:
    names = {group_name(*triple): triple for triple in many}
    assert len(names) == len(many), many


# --- end to end: two real tenants on a real server ------------------------------------------


def old_hashed_slug(schema: str, slug: str) -> str:
    """The room key that the hashed name of (schema, room, slug) used to end with."""
    return "h" + hashlib.sha256(f"{schema}\0room\0{slug}".encode()).hexdigest()[:48]


@pytest.fixture(scope="module")
def long_and_prefix_tenants(django_db_blocker: Any) -> tuple[TenantInfo, TenantInfo]:
    """A tenant with a 44-character schema and one whose schema is its first 30 characters."""
    with django_db_blocker.unblock():
        return (
            blocking(lambda: _make_tenant(LONG_SCHEMA)),
            blocking(lambda: _make_tenant(SHORT_SCHEMA)),
        )


def mentions(frames: list[dict[str, Any]], *texts: str) -> list[dict[str, Any]]:
    return [frame for frame in frames if any(text in repr(frame) for text in texts)]


async def test_a_room_with_a_long_slug_shares_nothing_with_a_room_named_like_its_hash(
    live_server: LiveServer, long_and_prefix_tenants: tuple[TenantInfo, TenantInfo]
) -> None:
    long_tenant, short_tenant = long_and_prefix_tenants
    alice = make_user_in(long_tenant, username=unique("alice_"))
    bob = make_user_in(short_tenant, username=unique("bob_"))
    # The room of the other tenant whose plain group name the long room's name used to be.
    lookalike = old_hashed_slug(LONG_SCHEMA, LONG_SLUG)

    async with Sockets() as sockets:
        alice_ws = await sockets.room(live_server, alice, LONG_SLUG)
        alice_seen = await frames_until(alice_ws, of_type("presence"))
        bob_ws = await sockets.room(live_server, bob, lookalike)
        bob_seen = await frames_until(bob_ws, of_type("presence"))

        bobs_text = unique("from-bob-")
        await send(bob_ws, {"type": "message", "message": bobs_text})
        bob_seen += await frames_until(bob_ws, is_message(bobs_text))
        # Alice's own message comes after Bob's on any group they would share, so everything
        # Bob's brought her is read by the time her echo arrives.
        alice_seen += (await fence(alice_ws))[0]

        alices_text = unique("from-alice-")
        await send(alice_ws, {"type": "message", "message": alices_text})
        alice_seen += await frames_until(alice_ws, is_message(alices_text))
        bob_seen += (await fence(bob_ws))[0]

    assert mentions(alice_seen, bob.username, bobs_text) == []
    assert mentions(bob_seen, alice.username, alices_text) == []

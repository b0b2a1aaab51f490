"""Authorization is live: open sockets lose rights that the database no longer gives them.

Kicks over the channel layer (deactivation, removal, deleted room, `room.recheck` when a room
is made private) act within moments; this module is what they call when they need the
database, and the safety net for a kick that was lost (Redis restart, a dropped pub/sub
connection, a row changed by hand). Every WS_AUTH_RECHECK_INTERVAL seconds (with jitter, so
that pods do not query in step) each process re-checks ALL its open sockets, batched per
tenant: one `in_schema` call of at most five queries per tenant, whatever the number of
sockets (tenant active; users' is_active and is_staff; rooms' existence and privacy;
memberships of the private ones; the signing keys that verified tenant-signed tokens; the
rooms' last seq rides along, for chat/fanout.py's check of messages whose publish was lost).
A socket whose user or tenant went inactive, or whose token's signing key was revoked, closes
4401; one whose room is gone, or private without its user as a member, closes 4403; a demoted
admin's actor loses `is_admin` (services read it from the database anyway, see
`chat.services._change_message`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from chat import drain, fanout
from chat.models import Membership, Room
from chat.protocol import CloseCode
from infra.background import start_background
from integrations.models import SigningKey
from tenants.context import in_schema
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantState:
    """What the database says about the users and rooms of one tenant's open sockets."""

    active: bool
    users: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # id: (active, staff)
    rooms: dict[int, bool] = field(default_factory=dict)  # id: is_private
    last_seqs: dict[int, int] = field(default_factory=dict)  # id: last seq (for chat/fanout.py)
    members: set[tuple[int, int]] = field(default_factory=set)  # (room id, user id)
    signing_keys: set[int] = field(default_factory=set)  # ids of those still registered

    def close_code(
        self, user_id: int, room_id: int | None, signing_key_id: int | None = None
    ) -> int | None:
        """The code a socket of `user_id` in `room_id` (None: no room) must close with;
        `signing_key_id`: the key that verified its tenant-signed token, if any."""
        active, _ = self.users.get(user_id, (False, False))
        if not self.active or not active:
            return int(CloseCode.UNAUTHORIZED)
        if signing_key_id is not None and signing_key_id not in self.signing_keys:
            return int(CloseCode.UNAUTHORIZED)  # the key was revoked
        if room_id is None:
            return None
        if room_id not in self.rooms:
            return int(CloseCode.FORBIDDEN)  # deleted (a room of the same slug has a new id)
        if self.rooms[room_id] and (room_id, user_id) not in self.members:
            return int(CloseCode.FORBIDDEN)
        return None

    def is_admin(self, user_id: int) -> bool:
        return self.users.get(user_id, (False, False))[1]


def tenant_state(
    schema_name: str,
    user_ids: list[int],
    room_ids: list[int],
    signing_key_ids: list[int] | None = None,
) -> TenantState:
    """At most five queries for any number of users, rooms and signing keys (run inside the
    schema)."""
    if not Tenant.objects.filter(schema_name=schema_name, is_active=True).exists():
        return TenantState(active=False)
    users = {
        pk: (active, staff)
        for pk, active, staff in get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", "is_active", "is_staff")
    }
    rows = Room.objects.filter(pk__in=room_ids).values_list("pk", "is_private", "last_seq")
    rooms = {pk: is_private for pk, is_private, _ in rows}
    last_seqs = {pk: last_seq for pk, _, last_seq in rows}
    private = [pk for pk, is_private in rooms.items() if is_private]
    members: set[tuple[int, int]] = set()
    if private:
        members = set(
            Membership.objects.filter(room_id__in=private, user_id__in=user_ids).values_list(
                "room_id", "user_id"
            )
        )
    signing_keys: set[int] = set()
    if signing_key_ids:
        signing_keys = set(
            SigningKey.objects.filter(pk__in=signing_key_ids).values_list("pk", flat=True)
        )
    return TenantState(
        active=True,
        users=users,
        rooms=rooms,
        members=members,
        last_seqs=last_seqs,
        signing_keys=signing_keys,
    )


def _room_id(socket: Any) -> int | None:
    room = getattr(socket, "room", None)
    return room.id if room is not None else None


async def _state_for(schema_name: str, sockets: list[Any]) -> TenantState:
    user_ids = sorted({s.actor.id for s in sockets})
    room_ids = sorted({r for r in map(_room_id, sockets) if r is not None})
    key_ids = sorted({k for s in sockets if (k := _signing_key_id(s)) is not None})
    return await in_schema(schema_name, tenant_state, schema_name, user_ids, room_ids, key_ids)


def _signing_key_id(socket: Any) -> int | None:
    return getattr(socket, "signing_key_id", None)


def _apply(state: TenantState, socket: Any) -> int | None:
    """The socket's close code, or None after bringing its actor's admin flag up to date."""
    code = state.close_code(socket.actor.id, _room_id(socket), _signing_key_id(socket))
    if code is None and socket.actor.is_admin != state.is_admin(socket.actor.id):
        socket.actor = dataclasses.replace(socket.actor, is_admin=state.is_admin(socket.actor.id))
    return code


async def socket_verdict(socket: Any) -> int | None:
    """Re-check one socket (an `auth` frame): the close code it deserves, or None."""
    return _apply(await _state_for(socket.schema_name, [socket]), socket)


async def recheck_sockets(schema_name: str, sockets: list[Any]) -> int:
    """Re-check sockets of one tenant with one batched call; close those that lost their
    right. Returns how many were closed."""
    if not sockets:
        return 0
    state = await _state_for(schema_name, sockets)
    hub = fanout.running_hub()
    if hub is not None:  # the same query tells the fan-out of messages it never heard of
        hub.check_tails(schema_name, state.last_seqs)
    closing = [(s, code) for s in sockets if (code := _apply(state, s)) is not None]
    await asyncio.gather(*(s.close_with(code) for s, code in closing), return_exceptions=True)
    return len(closing)


def _by_tenant(sockets: Iterable[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = defaultdict(list)
    for socket in sockets:
        if getattr(socket, "actor", None) is not None:
            grouped[socket.schema_name].append(socket)
    return grouped


async def recheck_all() -> int:
    """One pass over every open socket of this process; returns how many were closed."""
    closed = 0
    grouped = _by_tenant(drain.open_sockets())
    for schema_name, sockets in grouped.items():
        try:
            closed += await recheck_sockets(schema_name, sockets)
        except Exception:  # the database away: the next pass tries again
            logger.warning("authorization re-check of %s failed", schema_name, exc_info=True)
    logger.debug("authorization re-check: %d tenants, %d closed", len(grouped), closed)
    return closed


# --- `room.recheck`: every socket of the room on this process, in ONE query ---------------

_pending_rooms: set[tuple[int, str, str]] = set()


def recheck_room_soon(schema_name: str, slug: str) -> None:
    """Called by each socket of the room that gets `room.recheck`: the first schedules one
    re-check of all this process's sockets of the room; the others find it pending."""
    loop = asyncio.get_running_loop()
    key = (id(loop), schema_name, slug)
    if key in _pending_rooms:
        return
    _pending_rooms.add(key)

    async def run() -> None:
        try:
            await asyncio.sleep(0)  # let the other sockets' copies of the event arrive
            sockets = [
                s
                for s in drain.open_sockets()
                if s.schema_name == schema_name and getattr(s, "room", None) is not None
                if s.room.slug == slug
            ]
            await recheck_sockets(schema_name, sockets)
        except Exception:
            logger.warning("room re-check of %s/%s failed", schema_name, slug, exc_info=True)
        finally:
            _pending_rooms.discard(key)

    start_background(run(), name="room-recheck")


# --- the periodic pass ------------------------------------------------------------------

_loops: dict[int, asyncio.Task[None]] = {}


async def _periodic(interval: float) -> None:
    while True:
        # 0.75 to 1.25 times the interval: processes started together drift apart.
        await asyncio.sleep(interval * random.uniform(0.75, 1.25))
        try:
            await recheck_all()
        except Exception:
            logger.warning("authorization re-check failed", exc_info=True)


def ensure_periodic_recheck() -> None:
    """Start this event loop's periodic re-check once (at the first open socket)."""
    interval = float(settings.WS_AUTH_RECHECK_INTERVAL)
    if interval <= 0:
        return
    loop = asyncio.get_running_loop()
    task = _loops.get(id(loop))
    if task is None or task.done() or task.get_loop() is not loop:
        _loops[id(loop)] = start_background(_periodic(interval), name="auth-recheck")

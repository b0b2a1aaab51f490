"""Frames out: builders for the contract's server frames, group names, and the one function
that sends to a group.

A frame is serialised to JSON once, here, and travels through the channel layer as text;
every socket of the room then writes that same string (no per-recipient encoding or query).
Receiving is chat/fanout.py's: one subscription per group and process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import datetime
from typing import Any

from chat import fanout
from chat.protocol import ErrorCode, ServerFrame
from infra.metrics import LAYER_SECONDS

logger = logging.getLogger(__name__)

_MAX_GROUP_NAME = 99  # channels: group names must be shorter than 100 characters

# A plain group name is `t.<schema>.<kind>.<key>`. Each part's alphabet excludes the dot, so
# the name splits back into exactly one (schema, kind, key): two different triples cannot
# share a plain name. Anything else (a key or schema with other characters, or a name too
# long) is named `h.<sha256>` instead: a different first segment, so a hashed name can never
# equal a plain one, over an unambiguous encoding of the whole triple (nothing truncated).
_PLAIN_SCHEMA = re.compile(r"[a-z0-9_]+")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KINDS = frozenset({"room", "user", "notify", "tenant"})

# Channel-layer message types, i.e. consumer handler names (`room.frame` -> `room_frame`).
# Never taken from client input: the type of a layer message picks the handler that runs.
ROOM_FRAME = "room.frame"  # an encoded frame for every socket of a room
USER_FRAME = "user.frame"  # an encoded frame for a user's notification sockets
# Close every socket of a group (or of one `user` in it, or those of one `signing_key`).
SOCKET_CLOSE = "socket.close"
ROOM_KICK = "room.kick"  # close one user's sockets in one room (sent to the tenant group)
ROOM_RECHECK = "room.recheck"  # re-check every socket of a room against the database


def _group_name(schema_name: str, kind: str, key: str) -> str:
    if kind not in _KINDS:
        raise ValueError(f"unknown group kind {kind!r}")
    name = f"t.{schema_name}.{kind}.{key}"
    if (
        len(name) <= _MAX_GROUP_NAME
        and _PLAIN_SCHEMA.fullmatch(schema_name)
        and _PLAIN_KEY.fullmatch(key)
    ):
        return name
    # JSON of a list of strings is unambiguous (quoted, escaped), unlike joining with a byte
    # that a part could itself contain.
    encoded = json.dumps([schema_name, kind, key], ensure_ascii=True, separators=(",", ":"))
    return f"h.{hashlib.sha256(encoded.encode()).hexdigest()}"


def room_group_name(schema_name: str, room_slug: str) -> str:
    """Channel-layer group of a room, namespaced by the tenant's schema."""
    return _group_name(schema_name, "room", room_slug)


def user_group_name(schema_name: str, user_id: int) -> str:
    """Every socket of one user in one tenant (kicks)."""
    return _group_name(schema_name, "user", str(user_id))


def notify_group_name(schema_name: str, user_id: int) -> str:
    """The notification sockets of one user in one tenant."""
    return _group_name(schema_name, "notify", str(user_id))


def tenant_group_name(schema_name: str) -> str:
    """Every socket of one tenant (tenant deactivation)."""
    return _group_name(schema_name, "tenant", "all")


# --- frames ---------------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def chat_message(
    message: Any,
    *,
    room: str,
    user: str,
    frame_type: str = ServerFrame.CHAT_MESSAGE,
    attachments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `chat.message` frame (or `chat.message.edited`) of a stored `Message` row: a
    reply carries its root's `parent_id`, a top-level message `parent_id: null` and its
    `reply_count`; both carry `reactions` ({emoji: count}) and the attachment objects
    (chat/attachments.py: signed links, made by the caller)."""
    frame = {
        "type": frame_type,
        "id": message.pk,
        "seq": message.seq,
        "room": room,
        "user": user,
        "message": message.body,
        "client_id": message.client_id,
        "created_at": iso(message.created_at),
        "edited_at": iso(message.edited_at),
        "parent_id": message.parent_id,
        "reactions": message.reactions or {},
        "attachments": attachments or [],
    }
    if message.parent_id is None:
        frame["reply_count"] = message.reply_count
    return frame


def message_deleted(
    *, message_id: int, seq: int, room: str, parent_id: int | None = None
) -> dict[str, Any]:
    """`chat.message.deleted`; a deleted reply names its root (`parent_id`), whose
    `reply_count` it no longer counts."""
    frame: dict[str, Any] = {
        "type": ServerFrame.CHAT_MESSAGE_DELETED,
        "id": message_id,
        "seq": seq,
        "room": room,
    }
    if parent_id is not None:
        frame["parent_id"] = parent_id
    return frame


def reaction(
    *,
    message_id: int,
    seq: int,
    room: str,
    user: str,
    emoji: str,
    added: bool,
    counts: dict[str, int],
) -> dict[str, Any]:
    """`chat.reaction`: a user's emoji added to or removed from a message, with the counts
    after the change."""
    return {
        "type": ServerFrame.CHAT_REACTION,
        "id": message_id,
        "seq": seq,
        "room": room,
        "user": user,
        "emoji": emoji,
        "op": "add" if added else "remove",
        "counts": counts,
    }


def presence(users: list[str]) -> dict[str, Any]:
    return {"type": ServerFrame.PRESENCE, "users": users}


def user_event(frame_type: ServerFrame, username: str, **extra: Any) -> dict[str, Any]:
    return {"type": frame_type, "user": username, **extra}


def resume_done(seq: int) -> dict[str, Any]:
    return {"type": ServerFrame.RESUME_DONE, "seq": seq}


def auth_ok(exp: int) -> dict[str, Any]:
    return {"type": ServerFrame.AUTH_OK, "exp": exp}


def error(code: ErrorCode, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": ServerFrame.ERROR, "code": str(code), "detail": detail, **extra}


PONG_TEXT = encode({"type": ServerFrame.PONG})
PING_TEXT = encode({"type": ServerFrame.PING})


# --- sending --------------------------------------------------------------------------------


async def _group_send(group: str, event: dict[str, Any], *, skip: Any = None) -> None:
    """The only way out: this process's sockets at once, the others through `group_send`
    (chat/fanout.py)."""
    started = time.time()
    await fanout.publish(group, event, skip=skip)
    LAYER_SECONDS.labels("group_send").observe(time.time() - started)


async def broadcast(
    group: str, frame: dict[str, Any], *, seq: int | None = None, skip: Any = None
) -> None:
    """Send a frame to every socket in `group`, on every server process.

    `seq` (a `chat.message`) puts the frame in the room's ordered, gap-repaired stream;
    `skip` is a local socket that must not get the frame (the typist of `user.typing`).
    """
    text = encode(frame)
    event: dict[str, Any] = {"type": ROOM_FRAME, "text": text, "n": _size(text), "at": time.time()}
    if seq is not None:
        event["seq"] = seq
    await _group_send(group, event, skip=skip)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


async def notify_user(schema_name: str, user_id: int, frame: dict[str, Any]) -> None:
    """Send a frame to one user's notification sockets, on every process."""
    text = encode(frame)
    await _group_send(
        notify_group_name(schema_name, user_id),
        {"type": USER_FRAME, "text": text, "n": _size(text)},
    )


async def close_group(group: str, code: int) -> None:
    """Ask every socket in `group` (on any process) to close with `code`."""
    await _group_send(group, {"type": SOCKET_CLOSE, "code": int(code)})


async def close_user(schema_name: str, user_id: int, code: int) -> None:
    """Close every socket of one user in one tenant, on any process. Sent to the tenant's
    group, which every socket of the tenant is in already: no subscription per user."""
    await _group_send(
        tenant_group_name(schema_name), {"type": SOCKET_CLOSE, "code": int(code), "user": user_id}
    )


async def close_signing_key_sockets(schema_name: str, signing_key_id: int, code: int) -> None:
    """Close every socket of one tenant whose token (at the handshake, or in its last `auth`
    frame) was verified with this signing key, on any process (the key was revoked)."""
    await _group_send(
        tenant_group_name(schema_name),
        {"type": SOCKET_CLOSE, "code": int(code), "signing_key": signing_key_id},
    )


async def kick_from_room(schema_name: str, user_id: int, room_slug: str, code: int) -> None:
    """Close one user's sockets in one room, on any process."""
    await _group_send(
        tenant_group_name(schema_name),
        {"type": ROOM_KICK, "room": room_slug, "user": user_id, "code": int(code)},
    )


async def recheck_room(schema_name: str, room_slug: str) -> None:
    """Ask every process to re-check its sockets of a room (made private: non-members go)."""
    await _group_send(
        room_group_name(schema_name, room_slug), {"type": ROOM_RECHECK, "room": room_slug}
    )

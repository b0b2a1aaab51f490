"""Frame types, error codes and close codes of the client contract (PROTOCOL.md section 3)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    SLOW_CLIENT = 4408  # unsent frames passed WS_MAX_OUTBOUND_BYTES (chat/fanout.py)
    RESYNC = 4409  # the live stream could not be kept complete; resume with `since`
    TOO_MANY_SOCKETS = 4429  # also: a join that would create a room past the budget
    # A handshake while PostgreSQL is unreachable: RFC 6455's "try again later"; clients
    # reconnect (with backoff) as after 1001 / 1012.
    TRY_AGAIN_LATER = 1013
    INTERNAL_ERROR = 1011  # a server bug while handling a frame (logged); reconnect with `since`


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_FRAME = "invalid_frame"
    UNKNOWN_TYPE = "unknown_type"
    MESSAGE_TOO_LONG = "message_too_long"
    EMPTY_MESSAGE = "empty_message"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    # Not sent as a frame: services raise it when the user or tenant is no longer active,
    # and the transport turns it into close code 4401 / HTTP 401.
    UNAUTHORIZED = "unauthorized"
    # PostgreSQL unreachable: the frame was not stored; retry after `retry_after` seconds.
    UNAVAILABLE = "unavailable"


class ClientFrame(StrEnum):
    """Frame types a client may send."""

    MESSAGE = "message"
    TYPING = "typing"
    READ = "read"
    EDIT = "edit"
    DELETE = "delete"
    PING = "ping"
    AUTH = "auth"
    REACT = "react"
    UNREACT = "unreact"


class ServerFrame(StrEnum):
    """Frame types the server sends."""

    CHAT_MESSAGE = "chat.message"
    CHAT_MESSAGE_EDITED = "chat.message.edited"
    CHAT_MESSAGE_DELETED = "chat.message.deleted"
    CHAT_REACTION = "chat.reaction"
    PRESENCE = "presence"
    USER_JOINED = "user.joined"
    USER_LEFT = "user.left"
    USER_TYPING = "user.typing"
    MESSAGE_READ = "message.read"
    RESUME_DONE = "resume.done"
    PING = "ping"
    PONG = "pong"
    AUTH_OK = "auth.ok"
    ERROR = "error"

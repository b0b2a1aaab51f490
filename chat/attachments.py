"""Attachments (PROTOCOL.md section 6): uploads into a room, the signed links that hand them
out, linking them to a message, and removing their files.

Storage is Django's named storage "attachments" (settings.STORAGES): a FileSystemStorage
under DATA_DIR/attachments/ by default, django-storages' S3 backend when S3_BUCKET is set.
Every key is `<schema>/<room id>/<random>/<name>`, so one tenant's files never sit under
another tenant's prefix.

A link is the capability (an `<img src>` cannot send a bearer token) and never carries a
JWT: locally `/api/attachments/<id>/?exp=<unix>&sig=<hmac>`, signed with SECRET_KEY and
salted with the tenant's schema and the attachment id (a link of one tenant fails on every
other tenant's host); on S3 a presigned GET. Both expire after ATTACHMENT_URL_TTL seconds,
and are handed only to readers of the room: each frame and each history page signs afresh.

Each tenant's attachments share one storage quota (ATTACHMENT_TENANT_QUOTA_BYTES, or the
tenant's own `attachment_quota_bytes`), counted in `Tenant.attachment_bytes_used` (public
schema). The counter moves only in the transaction that inserts or deletes attachment rows,
and grows only by a conditional `UPDATE ... WHERE used + size <= quota` of the tenant's row:
PostgreSQL serializes concurrent uploads of a tenant on that row lock and re-checks the
condition against the committed value, so uploads on any number of pods cannot together pass
the quota, and the counter is the sum of the rows' sizes at every commit. An upload inserts
(and counts) its row BEFORE writing the file, so nothing is written past the quota, and a
process killed mid-upload leaves a counted, unlinked row that the sweep removes. The tenant
row is always the last lock a path takes (upload: room key, its row, tenant; message delete:
room key, message, attachment rows, tenant; room delete: room, attachment rows, tenant, then
its messages; sweep: attachment rows, tenant), so the counter adds no lock cycle, and every
path that meets a room delete locks the room first.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlencode

import puremagic
from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.uploadedfile import UploadedFile
from django.core.signing import Signer
from django.db import IntegrityError, transaction
from django.db.models import F, PositiveBigIntegerField, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.http import content_disposition_header

from chat.models import Attachment, Room
from chat.protocol import ErrorCode
from chat.services import Actor, ChatError, room_key_lock
from infra import parsers
from tenants.context import current_schema, run_in_schema

logger = logging.getLogger(__name__)

FALLBACK_CONTENT_TYPE = "application/octet-stream"
# A multipart body is the file plus its part headers and boundaries: the ASGI guard
# (middleware/upload_limit.py) lets this much more than ATTACHMENT_MAX_BYTES through, and the
# view then refuses a file over the limit by its own size.
MULTIPART_SLACK_BYTES = 64 * 1024
_MAX_NAME = 255
_SNIFF_BYTES = 4096
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Text that a browser shows as text: printable characters, tab, newlines, form feed.
_TEXT_CONTROLS = frozenset(range(32)) - {9, 10, 12, 13}


class AttachmentRefused(ChatError):
    """The `attachments` of a message were refused (nothing stored): `invalid_frame` or
    `not_found` over WebSocket, a 400 naming `attachments` over REST."""


class AttachmentTooLarge(ChatError):
    """An upload over ATTACHMENT_MAX_BYTES: 413 naming `file`."""


class AttachmentQuotaExceeded(AttachmentTooLarge):
    """An upload that would pass the tenant's storage quota: 413 naming `file`."""


def attachment_storage() -> Storage:
    return storages["attachments"]


def _is_local(storage: Storage) -> bool:
    return isinstance(storage, FileSystemStorage)


# --- names and types ------------------------------------------------------------------------


def clean_file_name(raw: Any) -> str:
    """The client's file name as shown to readers: its last path segment, NFC, without
    control characters, at most 255 characters (the extension kept); "file" if nothing is
    left."""
    name = unicodedata.normalize("NFC", str(raw or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and 0 < len(ext) <= 16 else ""
        name = (stem if ext else name)[: _MAX_NAME - len(ext) - 1].rstrip() + (
            f".{ext}" if ext else ""
        )
    return name or "file"


def _key_name(name: str) -> str:
    """The name's ASCII-safe form for a storage key (the row keeps the real name)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = _KEY_UNSAFE.sub("_", ascii_name).strip("._")[:100]
    return safe or "file"


def storage_key(schema_name: str, room_id: int, name: str) -> str:
    """`<schema>/<room id>/<random>/<name>`: the tenant's prefix first, a random part so that
    keys never collide and cannot be guessed."""
    return f"{schema_name}/{room_id}/{secrets.token_hex(16)}/{_key_name(name)}"


def sniff_content_type(upload: Any) -> str:
    """The file's type from its bytes (puremagic's signatures; plain UTF-8 text is
    `text/plain`), never from the client's header or the name; else application/octet-stream."""
    try:
        upload.seek(0)
        found = puremagic.from_stream(upload, mime=True)
    except (puremagic.PureError, ValueError, OSError):
        found = ""
    finally:
        upload.seek(0)
    found = (found or "").strip().lower()
    if _MIME.fullmatch(found):
        return found
    head = upload.read(_SNIFF_BYTES)
    upload.seek(0)
    return "text/plain" if _looks_like_text(head) else FALLBACK_CONTENT_TYPE


def _looks_like_text(head: bytes) -> bool:
    if not head or any(byte in _TEXT_CONTROLS for byte in head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the sample is fine
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def download_disposition(name: str) -> str:
    """`attachment; filename=...` (RFC 6266): always a download, never shown inline."""
    return str(content_disposition_header(True, name))


# --- links ----------------------------------------------------------------------------------


def _signer(schema_name: str, attachment_id: int) -> Signer:
    return Signer(salt=f"chat.attachment:{schema_name}:{attachment_id}")


def attachment_url(schema_name: str, attachment: Attachment) -> str:
    """A link to the file that works for ATTACHMENT_URL_TTL seconds (then 403)."""
    ttl = settings.ATTACHMENT_URL_TTL
    storage = attachment_storage()
    if not _is_local(storage):
        parameters = {
            "ResponseContentDisposition": download_disposition(attachment.name),
            "ResponseContentType": attachment.content_type,
        }
        url = storage.url(attachment.storage_key, parameters=parameters, expire=ttl)  # type: ignore[call-arg]
        return str(url)
    expires = str(int(time.time()) + ttl)
    query = urlencode(
        {"exp": expires, "sig": _signer(schema_name, attachment.pk).signature(expires)}
    )
    path = reverse("attachment-download", urlconf="chat.urls", args=[attachment.pk])
    return f"{path}?{query}"


def link_is_valid(schema_name: str, attachment_id: int, expires: str, signature: str) -> bool:
    """Whether `exp`/`sig` of a local link are this tenant's, for this attachment, unexpired."""
    try:
        if parsers.decimal_digits(expires, max_digits=12) < time.time():
            return False
    except ValueError:  # `exp=%C2%B2` passed isdigit() and failed int(): a 500 before
        return False
    expected = _signer(schema_name, attachment_id).signature(expires)
    return constant_time_compare(expected, signature)


def attachment_object(schema_name: str, attachment: Attachment) -> dict[str, Any]:
    """`{id, name, size, content_type, url}`, with a freshly signed `url`."""
    return {
        "id": attachment.pk,
        "name": attachment.name,
        "size": attachment.size,
        "content_type": attachment.content_type,
        "url": attachment_url(schema_name, attachment),
    }


def objects_by_message(message_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """The attachment objects of each message (ONE query for a page of messages), for the
    schema the connection is on; messages without any are absent."""
    ids = list(message_ids)
    if not ids:
        return {}
    schema_name = current_schema()
    found: dict[int, list[dict[str, Any]]] = {}
    for attachment in Attachment.objects.filter(message_id__in=ids).order_by("pk"):
        assert attachment.message_id is not None
        found.setdefault(attachment.message_id, []).append(
            attachment_object(schema_name, attachment)
        )
    return found


def objects_of_message(message_id: int) -> list[dict[str, Any]]:
    return objects_by_message([message_id]).get(message_id, [])


# --- upload ---------------------------------------------------------------------------------


def attachment_upload(
    *, schema_name: str, actor: Actor, room: Room, upload: UploadedFile
) -> dict[str, Any]:
    """Store an uploaded file of a room (the caller checked that the actor may read it) and
    answer its object. The type is sniffed from the bytes.

    The row is inserted and counted against the tenant's quota first (nothing is written if
    the quota refuses it), then the file is written; if writing fails, or the room was
    deleted meanwhile, row and file go again. Raises AttachmentTooLarge past
    ATTACHMENT_MAX_BYTES, AttachmentQuotaExceeded past the tenant's quota, ChatError
    not_found if the room is gone."""
    size = int(upload.size or 0)
    limit = settings.ATTACHMENT_MAX_BYTES
    if size > limit:
        raise AttachmentTooLarge(ErrorCode.INVALID_FRAME, f"The file is over {limit} bytes.")
    name = clean_file_name(upload.name)
    content_type = sniff_content_type(upload)
    upload.content_type = content_type  # what S3 stores as the object's type
    key = storage_key(schema_name, room.pk, name)

    def reserve() -> Attachment:
        with transaction.atomic():
            # The room's key first, the tenant's counter last: the lock order of every path
            # here. The row's foreign key takes the room's key only at the commit (deferred),
            # after the counter, which a room delete that has locked the room waits for.
            if not room_key_lock(room.pk):
                raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
            attachment = Attachment.objects.create(
                room_id=room.pk,
                uploader_id=actor.id,
                name=name,
                size=size,
                content_type=content_type,
                storage_key=key,
            )
            if not _usage_add(schema_name, size):
                raise AttachmentQuotaExceeded(
                    ErrorCode.INVALID_FRAME, "The tenant's storage quota is used up."
                )
            return attachment

    try:
        attachment = run_in_schema(schema_name, reserve)
    except IntegrityError:  # the room is gone (foreign key): nothing stored
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.") from None
    try:
        stored = attachment_storage().save(key, upload)
    except BaseException as exc:
        forgotten = run_in_schema(schema_name, _attachment_forget, attachment.pk)
        _remove_files([key])
        if isinstance(exc, OSError) and not forgotten:
            # A room deleted meanwhile removed the row, then the file being written (the
            # local storage's chmod after the write found it gone): the room's answer.
            raise ChatError(ErrorCode.NOT_FOUND, "No such room.") from None
        raise
    if stored != key:  # the storage chose another name (never with a random part, but...)
        attachment.storage_key = stored
        run_in_schema(
            schema_name, Attachment.objects.filter(pk=attachment.pk).update, storage_key=stored
        )
    # A room deleted while the file was written removed the row (and found no file yet):
    # this file is then nobody's. Checked after the write, so one of the two removes it.
    if not run_in_schema(schema_name, Attachment.objects.filter(pk=attachment.pk).exists):
        _remove_files([stored])
        raise ChatError(ErrorCode.NOT_FOUND, "No such room.")
    return attachment_object(schema_name, attachment)


# --- the tenant's storage quota ------------------------------------------------------------


def _tenant_row(schema_name: str) -> Any:
    from tenants.models import Tenant  # the public schema's table, on the search path

    return Tenant.objects.filter(schema_name=schema_name)


def _usage_add(schema_name: str, size: int) -> bool:
    """Count `size` more bytes for the tenant if its quota allows them (one conditional
    UPDATE of its row, which holds the row lock until the caller's transaction ends)."""
    quota = Coalesce(
        F("attachment_quota_bytes"),
        Value(settings.ATTACHMENT_TENANT_QUOTA_BYTES, output_field=PositiveBigIntegerField()),
    )
    counted = (
        _tenant_row(schema_name)
        .filter(attachment_bytes_used__lte=quota - size)
        .update(attachment_bytes_used=F("attachment_bytes_used") + size)
    )
    return bool(counted)


def _usage_release(schema_name: str, size: int) -> None:
    """Count `size` bytes less for the tenant; inside the transaction that deletes the rows."""
    if size:
        _tenant_row(schema_name).update(
            attachment_bytes_used=Greatest(
                F("attachment_bytes_used") - size, Value(0), output_field=PositiveBigIntegerField()
            )
        )


def _delete_rows(rows: Any) -> list[str]:
    """Delete attachment rows (locking them first, so that a concurrent delete of the same
    rows counts them once) and release their bytes; in the caller's transaction. Their
    storage keys."""
    found = list(rows.select_for_update().values_list("pk", "size", "storage_key"))
    if not found:
        return []
    Attachment.objects.filter(pk__in=[pk for pk, _, _ in found]).delete()
    _usage_release(current_schema(), sum(size for _, size, _ in found))
    return [key for _, _, key in found]


def _attachment_forget(attachment_id: int) -> bool:
    """An upload whose file could not be written: its row goes, its bytes are released.
    False if the row was gone already."""
    with transaction.atomic():
        return bool(_delete_rows(Attachment.objects.filter(pk=attachment_id)))


def attachment_usage_recount(schema_name: str) -> int:
    """Set the tenant's counter to the sizes of its attachment rows (a repair: the counter
    is kept exact by the paths above). Under the tenant row's lock, so an upload or delete
    in flight counts its own rows after this; the bytes now counted."""

    def recount() -> int:
        with transaction.atomic():
            list(_tenant_row(schema_name).select_for_update().values_list("pk", flat=True))
            used = Attachment.objects.aggregate(total=Sum("size"))["total"] or 0
            _tenant_row(schema_name).update(attachment_bytes_used=used)
        return int(used)

    return run_in_schema(schema_name, recount)


# --- linking to a message -------------------------------------------------------------------


def clean_attachment_ids(value: Any) -> list[int]:
    """`attachments` of a message frame: a list of at most ATTACHMENT_MAX_PER_MESSAGE
    distinct positive integers (absent: none). Raises AttachmentRefused (invalid_frame)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in value
    ):
        raise AttachmentRefused(
            ErrorCode.INVALID_FRAME, "`attachments` must be a list of attachment ids."
        )
    limit = settings.ATTACHMENT_MAX_PER_MESSAGE
    if len(value) > limit:
        raise AttachmentRefused(
            ErrorCode.INVALID_FRAME, f"`attachments` may name at most {limit} files."
        )
    if len(set(value)) != len(value):
        raise AttachmentRefused(ErrorCode.INVALID_FRAME, "`attachments` names an id twice.")
    return value


def attachments_link(*, message_id: int, room_id: int, user_id: int, ids: list[int]) -> None:
    """Attach the user's own unlinked uploads of the room to a message being inserted; call
    inside the INSERT's transaction, so that a refusal (AttachmentRefused not_found) rolls
    the message back too. One UPDATE; its row locks make two messages racing for one upload
    link it once."""
    if not ids:
        return
    linked = Attachment.objects.filter(
        pk__in=ids, room_id=room_id, uploader_id=user_id, message__isnull=True
    ).update(message_id=message_id)
    if linked != len(ids):
        raise AttachmentRefused(
            ErrorCode.NOT_FOUND,
            "`attachments`: each id must be one of your own uploads in this room that is not "
            "attached to a message yet.",
        )


# --- removal --------------------------------------------------------------------------------


def _remove_files(keys: list[str]) -> None:
    """Delete files from the storage; a failure is logged and leaves the file behind
    (README: what is left)."""
    storage = attachment_storage()
    for key in keys:
        try:
            storage.delete(key)
        except Exception:
            logger.warning("could not remove attachment file %s", key, exc_info=True)
            continue
        if _is_local(storage):  # the key's random folder, then the room's, if now empty
            folder = PurePosixPath(key).parent
            for empty in (folder, folder.parent):
                try:
                    os.rmdir(storage.path(str(empty)))
                except OSError:
                    break


def _remove_after_commit(keys: list[str]) -> None:
    if keys:
        # After the commit: a rolled-back delete must not have lost its files.
        transaction.on_commit(lambda: _remove_files(keys), robust=True)


def message_attachments_remove(message_id: int) -> None:
    """Within a message's delete: drop its attachment rows now (their bytes released), their
    files after commit."""
    _remove_after_commit(_delete_rows(Attachment.objects.filter(message_id=message_id)))


def room_attachments_remove(room_id: int) -> None:
    """Within a room's delete, before it: its uploads' rows go now (their bytes released),
    their files after the commit. The room row is locked first, so an upload that commits
    meanwhile (its foreign key waits for the lock) cannot slip past the list."""
    list(Room.objects.select_for_update().filter(pk=room_id).values_list("pk", flat=True))
    _remove_after_commit(_delete_rows(Attachment.objects.filter(room_id=room_id)))


def attachments_sweep(*, older_than: timedelta) -> int:
    """Remove the uploads of the current schema never linked to a message and older than
    `older_than` (rows now, their bytes released, files after commit); the number removed.
    Then the tenant's counter is recounted from its rows, so that no drift outlives an hour."""
    with transaction.atomic():
        rows = Attachment.objects.select_for_update(skip_locked=True).filter(
            message__isnull=True, created_at__lt=timezone.now() - older_than
        )
        found = list(rows.values_list("pk", flat=True))
        keys = _delete_rows(Attachment.objects.filter(pk__in=found, message__isnull=True))
        _remove_after_commit(keys)
    attachment_usage_recount(current_schema())
    return len(keys)


def sweep_tenants(*, older_than: timedelta, schema_name: str | None = None) -> dict[str, int]:
    """`attachments_sweep` in every tenant's schema (or one): {schema: number removed}."""
    from tenants.selectors import tenant_schema_names

    names = tenant_schema_names()
    if schema_name is not None:
        names = [name for name in names if name == schema_name]
    return {name: run_in_schema(name, attachments_sweep, older_than=older_than) for name in names}

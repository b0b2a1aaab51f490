"""HTTP transport of attachments: the upload (DRF, documented) and the download of a signed
local link (a plain view: the link is the capability, there is no bearer token)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_safe
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.api import _visible_room_or_404
from chat.api_errors import api_exception
from chat.attachments import (
    AttachmentQuotaExceeded,
    AttachmentTooLarge,
    attachment_storage,
    attachment_upload,
    download_disposition,
    link_is_valid,
)
from chat.models import Attachment
from chat.serializers import AttachmentSerializer
from chat.services import Actor, ChatError
from tenants.context import current_schema

_CHUNK = 64 * 1024


class AttachmentUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=False)


def too_large_body() -> dict[str, list[str]]:
    """The 413 body, here and in the ASGI guard (middleware/upload_limit.py)."""
    return {"file": [f"The file is over {settings.ATTACHMENT_MAX_BYTES} bytes."]}


_TOO_LARGE = inline_serializer("AttachmentTooLarge", {"file": serializers.ListField()})


class RoomAttachmentsView(APIView):
    """`POST /api/rooms/<slug>/attachments/`: upload a file into a room the caller can read."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        # Spelled out: without COMPONENT_SPLIT_REQUEST drf-spectacular would describe the
        # file as a URI string, and clients (and the fuzzer) would send text.
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        responses={
            201: AttachmentSerializer,
            413: OpenApiResponse(
                _TOO_LARGE, description="Over ATTACHMENT_MAX_BYTES, or past the tenant's quota"
            ),
        },
        description=(
            "Multipart field `file`, at most ATTACHMENT_MAX_BYTES (default 10 MiB; larger: 413 "
            "naming `file`). An upload that would pass the tenant's storage quota "
            "(ATTACHMENT_TENANT_QUOTA_BYTES, unlinked uploads included) is a 413 naming `file` "
            "too, and nothing of it is kept. The type is sniffed from the bytes. Attach it by "
            "sending its id in a message's `attachments`."
        ),
    )
    def post(self, request: Request, slug: str) -> Response:
        room = _visible_room_or_404(request, slug)  # before the body is parsed
        payload = AttachmentUploadSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            body = attachment_upload(
                schema_name=current_schema(),
                actor=Actor.of(request.user),
                room=room,
                upload=payload.validated_data["file"],
            )
        except AttachmentQuotaExceeded as exc:
            return Response({"file": [exc.detail]}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        except AttachmentTooLarge:
            return Response(too_large_body(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        except ChatError as exc:  # not_found: the room was deleted during the upload
            raise api_exception(exc, field="file") from exc
        return Response(body, status=status.HTTP_201_CREATED)


async def _chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """The file in chunks, read off the event loop; an async iterator, so Django's ASGI
    handler streams it instead of reading a sync iterator whole into memory first."""
    try:
        while chunk := await asyncio.to_thread(handle.read, _CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


@require_safe
def attachment_download(
    request: HttpRequest, attachment_id: int
) -> HttpResponse | StreamingHttpResponse:
    """A local link (`?exp=&sig=`, chat/attachments.py): 403 unless signed for this tenant and
    attachment and unexpired; served as a download with the sniffed type, never sniffed
    again by the browser nor run as a page."""
    expires, signature = request.GET.get("exp", ""), request.GET.get("sig", "")
    if not link_is_valid(current_schema(), attachment_id, expires, signature):
        return JsonResponse({"detail": "This link is invalid or has expired."}, status=403)
    attachment = Attachment.objects.filter(pk=attachment_id).first()
    if attachment is None:
        return JsonResponse({"detail": "No such attachment."}, status=404)
    try:
        handle: Any = attachment_storage().open(attachment.storage_key, "rb")
    except FileNotFoundError:
        return JsonResponse({"detail": "No such attachment."}, status=404)
    response = StreamingHttpResponse(_chunks(handle), content_type=attachment.content_type)
    response["Content-Length"] = str(attachment.size)
    response["Content-Disposition"] = download_disposition(attachment.name)
    response["X-Content-Type-Options"] = "nosniff"
    # Opened directly anyway (a browser that ignores the disposition): no script, no
    # plugin, no same-origin access.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = f"private, max-age={max(int(expires) - int(time.time()), 0)}"
    return response

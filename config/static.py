"""Static files served by the ASGI process itself (WhiteNoise), without leaving the event loop
for requests that are not static files.

WhiteNoise's Django middleware is sync-only. In Django's async handler a sync middleware moves
every request, static or not, onto a thread and back, and WhiteNoise's file responses are sync
iterators that the ASGI handler reads whole into memory (warning in the log each time). This
subclass keeps WhiteNoise's file index, headers, ranges and conditional requests, and only
changes how the middleware runs and how the body is read.

The finder below puts the browser client's one source (clients/js/client.js) at
/static/chat/client.js.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import IO, Any, Literal, overload

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import CheckMessage, Error
from django.core.files.storage import FileSystemStorage
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware

# Large enough that a 1.5 MB bundle is a few dozen thread hops, small enough to stream.
_CHUNK_BYTES = 256 * 1024


async def _chunks(body: IO[bytes] | None) -> AsyncIterator[bytes]:
    """The file's bytes (none for HEAD or 304), each read on a worker thread."""
    if body is None:
        return
    read = sync_to_async(body.read, thread_sensitive=False)
    while chunk := await read(_CHUNK_BYTES):
        yield chunk


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """Serves `STATIC_URL` (WhiteNoise, files found by Django's finders) on the async stack."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        super().__init__(get_response)
        markcoroutinefunction(self)  # so Django calls it as async middleware

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # DEBUG: look the file up on disk each time
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(
                request.path_info
            )
        else:  # the index built at start-up
            static_file = self.files.get(request.path_info)
        if static_file is None:
            return await self.get_response(request)
        # Opening the file is blocking I/O; WhiteNoise's `serve` registers it to be closed
        # with the response, which outlives the generator below.
        response: Any = await sync_to_async(self.serve, thread_sensitive=False)(
            static_file, request
        )
        response.streaming_content = _chunks(response.file_to_stream)
        return response


class BrowserClientFinder(BaseFinder):
    """`chat/client.js`, so `/static/chat/client.js`, found at clients/js/client.js: the browser
    client has one source, which the npm package and every tenant host serve alike.

    That one file only. A STATICFILES_DIRS entry `("chat", clients/js)` would serve the whole
    folder under /static/chat/: package.json, the unit tests, and node_modules/ once `npm ci` has
    put TypeScript there (make test does).
    """

    PATH = "chat/client.js"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=settings.BASE_DIR / "clients" / "js")
        self.storage.prefix = "chat"  # type: ignore[attr-defined]  # read by Django and WhiteNoise

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        if self.storage.exists("client.js"):
            return []
        hint = "The image must copy clients/js/client.js (deploy/Dockerfile)."
        return [
            Error(f"{self.storage.path('client.js')} is missing", hint=hint, id="tenantchat.E001")
        ]

    @overload
    def find(self, path: str, find_all: Literal[False] = False) -> str | None: ...
    @overload
    def find(self, path: str, find_all: Literal[True]) -> list[str]: ...
    def find(self, path: str, find_all: bool = False) -> Any:
        # No match is [] even without find_all, as with Django's own finders: finders.find()
        # would take a None for a match and hand it on (WhiteNoise's autorefresh, DEBUG=1).
        if path != self.PATH:
            return []
        found = self.storage.path("client.js")
        return [found] if find_all else found

    def list(
        self, ignore_patterns: Iterable[str] | None
    ) -> Iterator[tuple[str, FileSystemStorage]]:
        yield "client.js", self.storage

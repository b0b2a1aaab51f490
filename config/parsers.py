"""JSON parsing of everything a client sends (REST bodies and WebSocket frames), in one place.

The standard library's parser recurses once per nesting level: a body like `[[[[...]]]]`
5000 deep raises RecursionError, which is not a ValueError, so DRF's JSONParser let it
through as a 500 and the WebSocket consumer died with it (close 1006). Here every way a
document can fail to parse is a ValueError (REST: DRF's ParseError, 400).
"""

from __future__ import annotations

import json
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


def loads(text: str | bytes) -> Any:
    """`json.loads`, raising ValueError (never RecursionError) for any unparsable document."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply.") from exc


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser that answers a too-deeply nested body with 400, not 500."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc

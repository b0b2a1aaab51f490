"""Parsing of what a client sends, in one place: JSON (REST bodies and WebSocket frames) and
the decimal numbers of query strings and links.

Decimal numbers: `str.isdigit()` is true for the superscript two (U+00B2) and for other
scripts' digits (U+0661, Arabic-Indic one) as well; `int()` then fails on the first (a 500
from an attachment link's `exp=%C2%B2`) and reads the second as 1. `decimal_digits` takes
ASCII digits only, of a bounded length.

Two things the standard library's parser lets through that must be a client error here:
- Nesting: it recurses once per level, so `[[[[...]]]]` 5000 deep raises RecursionError (not
  a ValueError): DRF's JSONParser turned it into a 500 and the consumer died with it (1006).
- Lone surrogates: `"\\ud800"` is valid JSON but no Unicode text; PostgreSQL (psycopg's UTF-8
  encoding) then fails deep in a service. A document holding one is refused as unparsable.
Every failure is a ValueError (REST: DRF's ParseError, 400; WebSocket: `invalid_json`).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import IO, Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant

# A surrogate can only come from a `\uD800`-`\uDFFF` escape: decoded UTF-8 holds none.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decimal_digits(raw: str, *, max_digits: int = 18) -> int:
    """A non-negative integer written in 1 to `max_digits` ASCII digits; anything else
    (signs, spaces, other scripts' digits, superscripts, an empty string) is a ValueError."""
    if not 0 < len(raw) <= max_digits or not raw.isascii() or not raw.isdigit():
        raise ValueError("Not a non-negative decimal integer.")
    return int(raw)


def loads(text: str, **kwargs: Any) -> Any:
    """`json.loads` that raises ValueError (never RecursionError) for any unparsable
    document, too-deep nesting and unpaired surrogates included."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply.") from exc
    if _SURROGATE_ESCAPE.search(text):
        # Paired escapes became one code point; an unpaired one cannot be encoded.
        json.dumps(value, ensure_ascii=False).encode()  # UnicodeEncodeError is a ValueError
    return value


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser on `loads`: a too-deep body or a lone surrogate is a 400, not a 500."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            parse_constant = strict_constant if self.strict else None
            return loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc

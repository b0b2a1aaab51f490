"""Log hygiene: no token, password or query string that carries one reaches a log line."""

from __future__ import annotations

import logging
import re

# `?token=...` in a WebSocket path, `refresh=...` in a form body, `password=...` anywhere.
_SECRET = re.compile(r"(?i)\b(token|access|refresh|password|since)=[^&\s\"']*")
_QUERY = re.compile(r"(/[^\s\"?]*)\?[^\s\"]*")


def redact(text: str) -> str:
    """Drop query strings from paths and any `name=value` pair that may hold a secret."""
    return _QUERY.sub(r"\1?[redacted]", _SECRET.sub(r"\1=[redacted]", text))


class RedactSecretsFilter(logging.Filter):
    """Rewrites each record's final message through `redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logged as is, not lost
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_INSTALLED = False


def install_server_log_redaction() -> None:
    """Attach the filter to the handlers uvicorn and daphne configure for themselves.

    uvicorn logs every WebSocket handshake path with its query string (token included) at
    INFO on `uvicorn.error`, and HTTP paths on `uvicorn.access`; both use their own handlers
    that do not propagate to ours, so the filter goes on those handlers and loggers.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    redactor = RedactSecretsFilter()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "daphne", "django.channels.server"):
        logger = logging.getLogger(name)
        logger.addFilter(redactor)
        for handler in logger.handlers:
            handler.addFilter(redactor)

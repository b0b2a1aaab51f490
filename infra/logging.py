"""Log hygiene: no token, password or query string that carries one reaches a log line."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

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
        if cleaned == message:
            return True
        # Formatters that read `args` (uvicorn's access formatter unpacks its 5-tuple) keep
        # working when each argument is redacted on its own and that gives the same line;
        # otherwise the record carries the redacted line alone.
        if isinstance(record.args, tuple) and record.args and isinstance(record.msg, str):
            args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            try:
                same = record.msg % args == cleaned
            except (TypeError, ValueError):
                same = False
            if same:
                record.args = args
                return True
        record.msg, record.args = cleaned, None
        return True


_INSTALLED = False


def install_server_log_redaction() -> None:
    """Attach our filters (and the JSON format) to the handlers uvicorn and daphne configure.

    uvicorn logs every WebSocket handshake path with its query string (token included) at
    INFO on `uvicorn.error`, and HTTP paths on `uvicorn.access`; both use their own handlers
    that do not propagate to ours, so the filter goes on those handlers and loggers.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    redactor = RedactSecretsFilter()
    context = RequestContextFilter()
    formatter = JsonFormatter() if json_logs_enabled() else None
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "daphne", "django.channels.server"):
        logger = logging.getLogger(name)
        logger.addFilter(redactor)
        for handler in logger.handlers:
            handler.addFilter(redactor)
            handler.addFilter(context)
            if formatter is not None:
                handler.setFormatter(formatter)


# --- structured logs ------------------------------------------------------------------------

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
tenant_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class RequestContextFilter(logging.Filter):
    """Adds the current request id and tenant schema (context variables) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant = tenant_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, tenant, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "tenant": getattr(record, "tenant", None) or tenant_var.get(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def json_logs_enabled() -> bool:
    from django.conf import settings

    return bool(getattr(settings, "LOG_FORMAT", "text") == "json")

"""Redacted log records still format with the formatters that read their arguments."""

from __future__ import annotations

import logging

from uvicorn.logging import AccessFormatter

from infra.logging import RedactSecretsFilter

SECRET = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's HTTP protocol logs one request."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )


def test_access_line_with_a_query_string_formats_as_text_without_the_query() -> None:
    record = access_record(f"/api/rooms/?page=2&token={SECRET}")
    assert RedactSecretsFilter().filter(record)
    # `make run` (DEBUG=1) logs text through uvicorn's formatter, which unpacks record.args.
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '127.0.0.1:5000 - "GET /api/rooms/?[redacted] HTTP/1.1" 200 OK'
    assert SECRET not in line


def test_a_message_redacted_across_arguments_keeps_no_arguments() -> None:
    record = logging.LogRecord(
        "chat", logging.INFO, __file__, 1, "%s=%s", ("password", "hunter2"), None
    )
    assert RedactSecretsFilter().filter(record)
    assert record.getMessage() == "password=[redacted]"
    assert record.args is None

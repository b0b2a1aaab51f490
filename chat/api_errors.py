"""How REST answers a ChatError: the one mapping of error codes to HTTP statuses.

Services raise ChatError for both transports; a WebSocket sends it as an error frame, REST
answers it here (a view may name the body field a validation error belongs to). A ChatError
that a view does not catch reaches `exception_handler` (REST_FRAMEWORK EXCEPTION_HANDLER),
so no service error is ever a 500 and none is a blanket 400.

PostgreSQL away is answered here too: `DatabaseUnavailable` (from `tenants.context`) and the
connection-level errors a view's own queries raise (authentication's user lookup included)
are a 503 `{"detail", "code": "unavailable"}` with `Retry-After`, never a 500.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.protocol import ErrorCode
from chat.services import ChatError
from tenants.context import CONNECTION_ERRORS, DatabaseUnavailable


class ServiceUnavailable(exceptions.APIException):
    """503 with Retry-After (DRF's handler sets the header from `wait`)."""

    status_code = 503
    default_code = str(ErrorCode.UNAVAILABLE)

    def __init__(self, exc: DatabaseUnavailable) -> None:
        super().__init__(exc.detail, code=self.default_code)
        self.wait = exc.retry_after


def api_exception(exc: ChatError, *, field: str | None = None) -> exceptions.APIException:
    """The DRF exception for `exc`: not_found 404, forbidden 403, unauthorized 401,
    rate_limited 429 with Retry-After, any other (validation) code 400, under `field` if
    given (DRF's field-error shape)."""
    code = exc.code
    field = exc.field or field
    if code == ErrorCode.NOT_FOUND:
        return exceptions.NotFound(exc.detail, code=str(code))
    if code == ErrorCode.FORBIDDEN:
        return exceptions.PermissionDenied(exc.detail, code=str(code))
    if code == ErrorCode.UNAUTHORIZED:
        return exceptions.AuthenticationFailed(exc.detail, code=str(code))
    if code == ErrorCode.RATE_LIMITED:
        return exceptions.Throttled(wait=exc.extra.get("retry_after"), detail=exc.detail)
    detail: Any = {field: [exc.detail]} if field else [exc.detail]
    return exceptions.ValidationError(detail, code=str(code))


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, after turning an uncaught ChatError, or PostgreSQL away, into its HTTP
    answer."""
    if isinstance(exc, CONNECTION_ERRORS):
        exc = DatabaseUnavailable()
    if isinstance(exc, DatabaseUnavailable):
        return drf_exception_handler(ServiceUnavailable(exc), context)
    if isinstance(exc, ChatError):
        exc = api_exception(exc)
        view, request = context.get("view"), context.get("request")
        if isinstance(exc, exceptions.AuthenticationFailed) and view is not None:
            # DRF adds WWW-Authenticate before calling the handler; a converted 401 needs it too.
            exc.auth_header = view.get_authenticate_header(request)  # type: ignore[attr-defined]
    return drf_exception_handler(exc, context)

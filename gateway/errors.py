"""The one place that turns failures into HTTP statuses and OpenAI error objects.

Every error a client sees is `{"error": {"message", "type", "param", "code"}}`
with a status the `openai` client maps to its exception classes. Unexpected
exceptions become a generic 500; their traceback goes to the server log only.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mlx_interp.gateway")


class APIError(Exception):
    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(APIError):
    status = 403
    type = "permission_error"
    code = "admin_key_required"


class NotFound(APIError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(APIError):
    status = 405
    code = "method_not_allowed"


class Conflict(APIError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(APIError):
    status = 413
    code = "payload_too_large"


class Unprocessable(APIError):
    status = 422
    code = "unprocessable_entity"


class QueueFull(APIError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class ServerError(APIError):
    status = 500
    type = "server_error"
    code = "internal_error"


class Unavailable(APIError):
    status = 503
    type = "server_error"
    code = "unavailable"


_STARLETTE_STATUS = {404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge}


def as_api_error(exc: BaseException) -> APIError:
    """Map any exception to the APIError a client should see."""
    if isinstance(exc, APIError):
        return exc
    from starlette.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        cls = _STARLETTE_STATUS.get(exc.status_code)
        if cls is None:
            err = APIError(str(exc.detail))
            err.status = exc.status_code
            return err
        return cls(str(exc.detail))
    log.error("internal error", exc_info=(type(exc), exc, exc.__traceback__))
    return ServerError("the server hit an internal error while handling this request")

"""Domain errors. The HTTP layer maps each to a status code and a JSON body
``{"error": {"code", "message", "field"?}}``; the CLI prints the message."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class InvalidInputError(ServiceError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class UnavailableError(ServiceError):
    status_code = 503
    code = "unavailable"

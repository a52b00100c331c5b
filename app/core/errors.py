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


class UnauthenticatedError(ServiceError):
    status_code = 401
    code = "unauthenticated"
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class InvalidInputError(ServiceError):
    status_code = 422
    code = "validation_error"  # the one code of every 422, as request validation's


class PayloadTooLargeError(ServiceError):
    status_code = 413
    code = "payload_too_large"


class GoneError(ServiceError):
    status_code = 410
    code = "gone"


class ConflictError(ServiceError):
    status_code = 409
    code = "conflict"


class UnavailableError(ServiceError):
    status_code = 503
    code = "unavailable"


class CorruptArtifactError(UnavailableError):
    """A model file is missing or differs from its recorded sha256: it is never served."""

    code = "artifact_integrity"

    def __init__(self, message: str, *, model_name: str, version: int, expected_sha256: str,
                 reason: str):
        super().__init__(message)
        self.model_name = model_name
        self.version = version
        self.expected_sha256 = expected_sha256
        self.reason = reason

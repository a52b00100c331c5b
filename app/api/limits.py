"""Limits applied before any route runs.

Body size: a body over the limit gets 413 before it is read into memory. A declared
Content-Length over the limit is refused at once; a chunked body is counted as it arrives
and refused as soon as it passes the limit.

NUL characters in the path or a query parameter get 422 naming the parameter: no
identifier or filter of this API contains one, and PostgreSQL cannot store or compare them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_body


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul_field = _nul_field(scope)
        if nul_field is not None:
            await self._reply(send, 422, "validation_error",
                              f"{nul_field}: NUL characters are not allowed", nul_field)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await self._reply(send, 400, "bad_request", "Content-Length is not a number")
                return
            if too_large:
                await self._reply(send, 413, "payload_too_large", self._message())
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes FastAPI's body parsing unchanged and is
                    # rendered by the app's error handler as a 413 in the usual shape.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"request body exceeds the limit of {self.max_bytes} bytes"

    @staticmethod
    async def _reply(send: Send, status: int, code: str, message: str,
                     field: str | None = None) -> None:
        import json

        body = json.dumps(error_body(code, message, field)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _nul_field(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" in query or "\x00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return unquote(name).replace("\x00", "") or "query"
    return None

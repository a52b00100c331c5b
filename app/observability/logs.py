"""Structured logs (structlog over the standard library's logging).

Every log line, from our modules, uvicorn, SQLAlchemy or anything else using ``logging``,
goes through one formatter: JSON (one object per line) or plain text
(``UNLEARN_LOG_FORMAT``). Context bound with ``log_context`` (the HTTP request ID, the
forget request ID, the worker ID) is added to every line logged while it is bound, on the
thread or task that bound it (and threadpool calls made from it).

Secrets never reach a line: API keys (``ulk_...``), bearer tokens, and fields named like
credentials or like a data subject's identifier are replaced by ``[REDACTED]`` after
formatting, exception tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import orjson
import structlog

HANDLER_NAME = "unlearn-structured"
REDACTED = "[REDACTED]"
SENSITIVE_KEYS = frozenset({
    "authorization", "api_key", "apikey", "token", "password", "secret", "cookie",
    "webhook_secret", "bootstrap_admin_key", "subject_reference", "x-api-key",
})
# API keys of this service, bearer credentials, and the webhook signature.
SECRET_PATTERN = re.compile(r"ulk_[A-Za-z0-9_\-]+|(?i:bearer)\s+[^\s\"',;]+|sha256=[0-9a-f]{64}")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_PATTERN.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _scrub(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item) for item in value]
    return value


def redact(_logger, _method, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog processor: drop credential-like fields, mask secrets inside strings."""
    return {key: (REDACTED if key.lower() in SENSITIVE_KEYS else _scrub(value))
            for key, value in event_dict.items()}


def _json_dumps(value: Any, **_kwargs) -> str:
    return orjson.dumps(value, default=str).decode()


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


def make_formatter(log_format: str) -> logging.Formatter:
    renderer = (structlog.processors.JSONRenderer(serializer=_json_dumps)
                if log_format == "json"
                else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0))
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the object it was
    when logging was configured: a test runner (or a daemonising wrapper) swaps and closes
    stderr, and a background worker thread logging afterwards would otherwise write to a
    closed file ("--- Logging error ---")."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # read-only here: the stream is always the current sys.stderr
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(level: str = "info", log_format: str = "text",
                      stream: TextIO | None = None) -> logging.Handler:
    """Route all logging through one structured handler on the root logger (replacing the
    one a previous call installed); uvicorn's loggers propagate to it. Returns it."""
    handler: logging.Handler = (logging.StreamHandler(stream) if stream is not None
                                else CurrentStderrHandler())
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME or isinstance(existing, logging.StreamHandler) \
                and getattr(existing, "stream", None) in (sys.stderr, sys.stdout):
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic (1.16+) announces each of its built-in plugins at INFO whenever a migration
    # context is set up: seven lines of noise at every start; its real messages stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    structlog.configure(
        processors=[*_shared_processors(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return handler


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields (request_id, forget_request_id, worker_id...) to every line logged in
    this context; restored on exit."""
    with structlog.contextvars.bound_contextvars(**fields):
        yield


def bind_log_context(**fields: Any) -> None:
    """Bind for the rest of this thread's (or task's) life: a worker thread's ID."""
    structlog.contextvars.bind_contextvars(**fields)

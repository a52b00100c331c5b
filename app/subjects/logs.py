"""Access logs must not carry subject identifiers: ``/subjects/{id}/...`` is logged as
``/subjects/<redacted>/...``."""

from __future__ import annotations

import logging
import re

_SUBJECT_PATH = re.compile(r"/subjects/[^/?\s\"]+")


class RedactSubjectPaths(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_SUBJECT_PATH.sub("/subjects/<redacted>", a)
                                if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "/subjects/" in record.msg:
            record.msg = _SUBJECT_PATH.sub("/subjects/<redacted>", record.msg)
        return True


def redact_subject_paths() -> None:
    """Install the filter on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSubjectPaths) for f in logger.filters):
        logger.addFilter(RedactSubjectPaths())

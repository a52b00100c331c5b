"""Opaque cursors for ``{"items": [...], "next_cursor": ...}`` lists.

A cursor is base64 JSON, so a client can craft any JSON value: the typed decoders below
accept exactly the shapes this service issues (JSON ``true`` is not an id, a date without
a timezone is not a timestamp, an id never holds NUL or a lone surrogate, and a number
fits the database's 32-bit integers) and refuse anything else with a 422 on ``cursor``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

from app.core.errors import InvalidInputError

DB_INT_MAX = 2**31 - 1  # PostgreSQL INTEGER: larger numbers cannot match any row
NOT_OURS = "cursor is not one this service issued"


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> object | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception:
        raise InvalidInputError("cursor is not one this service issued", "cursor") from None


def decode_id_cursor(cursor: str | None) -> int | None:
    """A cursor holding a positive row id or version number."""
    value = decode_cursor(cursor)
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= DB_INT_MAX:
        raise InvalidInputError(NOT_OURS, "cursor")
    return value


def encode_time_id_cursor(moment: dt.datetime, identifier: str) -> str:
    """The cursor ``decode_time_id_cursor`` reads: lists ordered by (time, id), newest first
    (forget requests, in the API and the console alike)."""
    return encode_cursor([moment.isoformat(), identifier])


def decode_time_id_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    """A cursor holding [timezone-aware ISO timestamp, string id]."""
    value = decode_cursor(cursor)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(part, str) for part in value)):
        raise InvalidInputError(NOT_OURS, "cursor")
    text, identifier = value
    try:
        moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("naive")
        moment = moment.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidInputError(NOT_OURS, "cursor") from None
    if not safe_text(identifier, 64):
        raise InvalidInputError(NOT_OURS, "cursor")
    return moment, identifier


def safe_text(value: str, max_length: int) -> bool:
    """Storable and comparable by every backend: no NUL, no lone surrogate, not too long."""
    if len(value) > max_length or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

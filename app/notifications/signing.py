"""HMAC-SHA256 signatures of webhook bodies.

The signed message is ``f"{timestamp}.".encode() + body``: binding the timestamp into the
signature lets a receiver refuse a replayed delivery by its age. Headers:

    X-Unlearn-Timestamp: 1764300000
    X-Unlearn-Signature: sha256=<hex HMAC-SHA256(secret, b"1764300000." + body)>

The secret is ``UNLEARN_WEBHOOK_SECRET`` or, unset, a random one made on first start in
``UNLEARN_WEBHOOK_SECRET_PATH`` (mode 0600, created exclusively, as the certificate
signing key is).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

from app.core.secret_files import create_once

SIGNATURE_HEADER = "X-Unlearn-Signature"
TIMESTAMP_HEADER = "X-Unlearn-Timestamp"
SCHEME = "sha256"


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The X-Unlearn-Signature header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def verify(secret: bytes, timestamp_header: str, signature_header: str, body: bytes,
           tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: recompute over the raw body, compare in constant time, and
    refuse timestamps further than ``tolerance_s`` from now (replays)."""
    try:
        timestamp = int(timestamp_header)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature_header or "")


def load_or_create_secret(path: Path) -> bytes:
    """The secret in ``path`` (hex text); on first start, a fresh 32-byte one. Two
    processes starting at once end up with the same secret (exclusive link)."""
    path = Path(path)
    create_once(path, lambda: secrets.token_hex(32).encode())
    text = path.read_text().strip()
    if len(text) < 32:
        raise ValueError(f"{path} holds no usable webhook secret (at least 32 characters)")
    return text.encode()


def webhook_secret(settings) -> bytes:
    if settings.webhook_secret is not None:
        value = settings.webhook_secret.get_secret_value()
        if len(value) < 16:
            raise ValueError("UNLEARN_WEBHOOK_SECRET must have at least 16 characters")
        return value.encode()
    return load_or_create_secret(settings.webhook_secret_path)

"""The console's session cookie: signed with HMAC-SHA256 under a secret that is configured
or made once (app/console/auth.py says what the cookie holds and how it is checked)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from app.console.settings import ConsoleSettings


class SessionSigner:
    """Signs and checks the session cookie's payload with HMAC-SHA256."""

    def __init__(self, secret: bytes, max_age_s: float):
        self._secret = secret
        self.max_age_s = max_age_s

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def dumps(self, data: dict) -> str:
        payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def loads(self, value: str) -> dict | None:
        try:
            encoded, signature = value.split(".", 1)
            payload = _unb64(encoded)
            if not hmac.compare_digest(_unb64(signature), self._mac(payload)):
                return None
            data = json.loads(payload)
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), (int, float)):
            return None
        if time.time() - data["t"] > self.max_age_s:
            return None
        return data


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_secret(settings: ConsoleSettings, directory: Path) -> bytes:
    """The configured secret, or one created once under ``directory`` (mode 0600) so that
    sessions survive restarts and every uvicorn worker process accepts them."""
    if settings.console_secret:
        return settings.console_secret.encode()
    path = Path(directory) / "console-session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = path.read_bytes().strip()
        if len(existing) >= 32:
            return existing
        path.unlink(missing_ok=True)  # empty or truncated by a crash: make a new one
        return load_or_create_secret(settings, directory)
    secret = secrets.token_hex(32).encode()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    return secret

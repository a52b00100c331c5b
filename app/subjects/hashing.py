"""Keyed hashes of data-subject identifiers.

A subject's identifier is personal data: the service never stores or logs it. It keeps
``hmac-sha256:<hex>`` of it under a server secret instead, and matches subjects on that
hash. A plain hash would not do: identifiers (e-mail addresses, customer numbers) are few
enough to be guessed and hashed by anyone who reads the database; without the secret the
keyed hash cannot be recomputed.

The secret is configured like the certificate signing key: UNLEARN_SUBJECT_KEY, or a file
(UNLEARN_SUBJECT_KEY_PATH) of 32 random bytes made on first start, readable by its owner
only. Changing the secret changes every hash: keep it with the database's backups.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from app.core.secret_files import create_once

PREFIX = "hmac-sha256:"


@dataclass(frozen=True)
class SubjectHasher:
    secret: bytes

    def hash(self, subject_id: str) -> str:
        digest = hmac.new(self.secret, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest

    @property
    def key_id(self) -> str:
        """Names the secret without revealing it (certificates say which one hashed)."""
        return hashlib.sha256(b"unlearn-subject-key-id:" + self.secret).hexdigest()[:16]


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret at ``path``; on first start create it (mode 0600, created
    exclusively, so two processes starting at once end up with the same secret)."""
    path = Path(path)
    create_once(path, lambda: secrets.token_bytes(32))
    secret = path.read_bytes()
    if len(secret) < 16:
        raise ValueError(f"{path} holds {len(secret)} bytes; a subject key needs at least 16")
    return secret


def get_hasher(ctx) -> SubjectHasher:
    hasher = ctx.extras.get("subject_hasher")
    if hasher is None:
        configured = ctx.settings.subject_key
        secret = (configured.get_secret_value().encode("utf-8") if configured is not None
                  else load_or_create_secret(ctx.settings.subject_key_path))
        hasher = SubjectHasher(secret)
        ctx.extras["subject_hasher"] = hasher
    return hasher

"""Server-side console sessions: start one at login, find it on each request, end it at
logout. Plain functions over a database session, no HTTP.

A session is valid while its row is neither expired nor revoked *and* its API key is
neither revoked nor expired: the lookup joins the key, so revoking a key (``unlearn keys
revoke`` or ``POST /keys/{id}/revoke``) ends its console sessions at once, without the
key store knowing about the console.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from app.auth.models import ApiKey
from app.console.models import ConsoleSession
from app.db.base import utcnow
from app.db.session import rowcount

# Tokens longer than this are not ours; refusing them early keeps hashing bounded.
MAX_TOKEN_LENGTH = 100


@dataclass(frozen=True)
class LiveSession:
    """What a valid session says about its caller."""

    key_id: str
    name: str
    roles: frozenset[str]
    csrf_token: str
    expires_at: dt.datetime


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def csrf_token_of(token: str) -> str:
    """The session's CSRF token, derived from (not equal to) the session token: pages carry
    it in their forms, and a page's text does not reveal the cookie."""
    digest = hashlib.sha256(b"unlearn-console-csrf\x00" + token.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def start_session(session: Session, key_id: str, lifetime: dt.timedelta) -> str:
    """Store a new session for ``key_id`` and return its token (known only to the caller,
    who puts it in the cookie). Expired sessions are cleared on the way."""
    purge_expired(session)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(ConsoleSession(token_hash=hash_token(token), api_key_id=key_id,
                               created_at=now, expires_at=now + lifetime))
    session.flush()
    return token


def find_session(session: Session, token: str) -> LiveSession | None:
    """The live session for ``token``; None when unknown, expired, revoked, or when its
    key is revoked or expired."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    now = utcnow()
    row = session.execute(
        select(ConsoleSession.expires_at, ApiKey.id, ApiKey.name, ApiKey.roles)
        .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
        .where(ConsoleSession.token_hash == hash_token(token),
               ConsoleSession.revoked_at.is_(None),
               ConsoleSession.expires_at > now,
               ApiKey.revoked_at.is_(None),
               or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
    ).first()
    if row is None:
        return None
    expires_at, key_id, name, roles = row
    return LiveSession(key_id=key_id, name=name, roles=frozenset(roles or ()),
                       csrf_token=csrf_token_of(token), expires_at=expires_at)


def end_session(session: Session, token: str) -> bool:
    """Revoke the session (logout): its cookie, replayed, opens nothing. True if it was live."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return False
    result = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.token_hash == hash_token(token),
               ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=utcnow()))
    return rowcount(result) > 0


def purge_expired(session: Session) -> int:
    """Delete sessions past their expiry (revoked ones included: they expire too)."""
    result = session.execute(delete(ConsoleSession)
                             .where(ConsoleSession.expires_at <= utcnow()))
    return rowcount(result)

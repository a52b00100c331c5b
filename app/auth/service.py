"""Creating, checking and revoking API keys.

A key is a random 256-bit token shown to its owner once. The database keeps a lookup id
(the first 16 hex digits of the token's sha256, which reveals nothing usable) and
sha256(salt ‖ token) with a per-key random salt; checks compare hashes in constant time,
and an unknown id costs the same hash-and-compare as a known one, so timing does not tell
whether a key exists.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.audit.service import AuditAction, record
from app.auth.models import ApiKey
from app.core.errors import ConflictError, InvalidInputError, NotFoundError
from app.db.base import utcnow

TOKEN_PREFIX = "ulk_"
MIN_TOKEN_LENGTH = 24
# Key names become audit-log actors: no ':' so that no key can pose as "worker:..." or
# "system:...", and nothing that needs quoting in a log line.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
BOOTSTRAP_KEY_NAME = "bootstrap-admin"
MAX_KEY_LIFETIME = dt.timedelta(days=3653)


class Role(str, enum.Enum):
    admin = "admin"
    privacy_officer = "privacy_officer"
    auditor = "auditor"
    client = "client"


@dataclass(frozen=True)
class Principal:
    """The caller, once authenticated: the key's id, name (the audit actor) and roles."""

    key_id: str
    name: str
    roles: frozenset[str]

    def has_any(self, roles: frozenset[str]) -> bool:
        # admin may do everything: it manages the keys that grant every other role anyway.
        return Role.admin.value in self.roles or bool(self.roles & roles)


def key_id_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _secret_hash(salt: str, token: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + token.encode("utf-8", "surrogatepass")).hexdigest()


_DUMMY_SALT = secrets.token_hex(16)
_DUMMY_HASH = _secret_hash(_DUMMY_SALT, "no such key")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise InvalidInputError(
            "name must be 1-100 characters: letters, digits and . _ @ + - "
            "(starting with a letter or digit)", "name")
    return name


def check_roles(roles: list[str]) -> list[str]:
    if not roles:
        raise InvalidInputError("a key needs at least one role", "roles")
    valid = {role.value for role in Role}
    for position, role in enumerate(roles):
        if role not in valid:
            raise InvalidInputError(
                f"unknown role {role!r}; roles are {', '.join(sorted(valid))}",
                f"roles[{position}]")
    return sorted(set(roles))


def create_key(session: Session, *, name: str, roles: list[str], created_by: str,
               expires_at: dt.datetime | None = None,
               token: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key and return it with its token (the only time the token is known)."""
    check_name(name)
    roles = check_roles(roles)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInputError("expires_at needs a timezone", "expires_at")
        try:
            expires_at = expires_at.astimezone(dt.timezone.utc)
        except OverflowError:
            raise InvalidInputError("expires_at is out of range", "expires_at") from None
        if expires_at <= utcnow():
            raise InvalidInputError("expires_at is in the past", "expires_at")
        if expires_at > utcnow() + MAX_KEY_LIFETIME:
            raise InvalidInputError("expires_at is more than 10 years ahead; omit it for a "
                                    "key that does not expire", "expires_at")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ConflictError(f"a key named {name!r} already exists", "name")
    token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidInputError(f"a key must have at least {MIN_TOKEN_LENGTH} characters",
                                "token")
    salt = secrets.token_hex(16)
    key = ApiKey(id=key_id_of(token), name=name, roles=roles, salt=salt,
                 secret_hash=_secret_hash(salt, token), created_by=created_by,
                 created_at=utcnow(), expires_at=expires_at)
    session.add(key)
    session.flush()
    record(session, AuditAction.key_created, created_by,
           details={"key_id": key.id, "name": name, "roles": roles,
                    "expires_at": expires_at.isoformat() if expires_at else None})
    return key, token


# Every API call runs this lookup: one statement built once (building a select costs more
# than SQLite takes to run it) and run as Core, without the ORM's identity map.
_KEY_BY_ID = select(ApiKey.id, ApiKey.name, ApiKey.roles, ApiKey.salt, ApiKey.secret_hash,
                    ApiKey.revoked_at, ApiKey.expires_at).where(ApiKey.id == bindparam("key_id"))


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal for a valid, unrevoked, unexpired token; None otherwise."""
    key = (session.connection().execute(_KEY_BY_ID, {"key_id": key_id_of(token)}).first()
           if token else None)
    salt, expected = (key.salt, key.secret_hash) if key is not None else (_DUMMY_SALT,
                                                                            _DUMMY_HASH)
    matches = hmac.compare_digest(_secret_hash(salt, token), expected)
    if key is None or not matches or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at <= utcnow():
        return None
    return Principal(key_id=key.id, name=key.name, roles=frozenset(key.roles))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.name)))


def find_key(session: Session, id_or_name: str) -> ApiKey:
    key = session.get(ApiKey, id_or_name) or session.scalar(
        select(ApiKey).where(ApiKey.name == id_or_name))
    if key is None:
        raise NotFoundError(f"no key with id or name {id_or_name!r}", "key")
    return key


def revoke_key(session: Session, id_or_name: str, revoked_by: str) -> ApiKey:
    key = find_key(session, id_or_name)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record(session, AuditAction.key_revoked, revoked_by,
               details={"key_id": key.id, "name": key.name})
    return key


def ensure_bootstrap_admin(session: Session, token: str | None = None) -> str | None:
    """With no key at all, create an admin key (``token`` if given) and return its token;
    None when keys exist already."""
    if session.scalar(select(ApiKey.id).limit(1)) is not None:
        return None
    _, token = create_key(session, name=BOOTSTRAP_KEY_NAME, roles=[Role.admin.value],
                          created_by="system:bootstrap", token=token)
    return token


def ensure_security(ctx) -> str | None:
    """On start: make sure the certificate signing key exists, and with no API key at all
    create the first admin key (UNLEARN_BOOTSTRAP_ADMIN_KEY, or a random one). Returns a
    newly created admin key's token (to show once), else None."""
    import logging

    from sqlalchemy.exc import DBAPIError, IntegrityError

    from app.core.signing import get_signer

    get_signer(ctx)
    configured = ctx.settings.bootstrap_admin_key
    try:
        with ctx.db.session() as session:
            token = ensure_bootstrap_admin(
                session, configured.get_secret_value() if configured else None)
    except IntegrityError:  # another process bootstrapped at the same moment
        return None
    except DBAPIError as error:  # not migrated yet: /readyz says so; no key until it is
        logging.getLogger("unlearn").warning("no API key bootstrap: %s", error.orig)
        return None
    if token is not None and configured is not None:
        return BOOTSTRAP_FROM_ENV
    return token


BOOTSTRAP_FROM_ENV = "(the value of UNLEARN_BOOTSTRAP_ADMIN_KEY)"


# Set by `unlearn serve` for its app processes: the address the banner shows.
SERVED_URL_VARIABLE = "UNLEARN_SERVED_URL"


def announce_bootstrap_key(token: str | None, base_url: str | None = None) -> None:
    """Print a new admin key once, where the operator starting the service will see it;
    ``base_url`` is where the API is served (from ``unlearn serve``, or ``bootstrap --url``)."""
    import os
    import sys

    if token is None:
        return
    base_url = base_url or os.environ.get(SERVED_URL_VARIABLE)
    where = (f"{base_url.rstrip('/')}/models" if base_url else
             "<URL>/models   (<URL>: where `unlearn serve` listens, by default "
             "http://127.0.0.1:8000)")
    lines = [
        "",
        "=" * 72,
        f"Created the first admin API key ({BOOTSTRAP_KEY_NAME}). It is shown only now:",
        f"    {token}",
        f"Use it as:  curl -H 'Authorization: Bearer <key>' {where}",
        "Create keys for people and programs with: unlearn keys create --name NAME --role ROLE",
        "=" * 72,
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)

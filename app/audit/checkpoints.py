"""Signed checkpoints of the audit chain head, kept outside the database.

The hash chain alone catches edits, deletions and reorderings, but not someone who owns
the database and rewrites consistently: deletes the tail and moves the head row back,
rewrites from the middle and re-hashes everything after, or appends a well-formed entry.
A checkpoint is the head (``seq``, ``hash``) and the time, signed with the service's
Ed25519 key (which the database does not hold) and appended to a store the database
cannot reach: a local append-only JSON-lines file by default, or an S3 prefix (one object
per checkpoint, written with object lock when the bucket has it).

Checked against the latest checkpoint, a chain reports:

- ``missing_tail``: the log ends before the checkpoint's seq (entries were deleted and
  the head moved back);
- ``rewritten``: the entry at the checkpoint's seq no longer has the signed hash (the
  chain was rewritten up to there, however consistently it was re-hashed);
- ``tampered``: the chain itself is broken at or before the checkpoint (edited, deleted
  or reordered entries);
- ``forged_entry``: after the checkpoint, an entry that does not chain, or one dated
  before the checkpoint although it was appended after it (the service dates entries
  while it holds the chain-head lock, so a genuine later entry is never older);
- ``checkpoint_invalid``: the checkpoint's signature does not verify with the service key.

What a checkpoint cannot detect: entries appended *after* the latest checkpoint that chain
correctly and carry a plausible date are indistinguishable from genuine ones until the
next checkpoint signs them, and then they are signed as genuine. Shorter
``UNLEARN_AUDIT_CHECKPOINT_INTERVAL_S`` shrinks that window; the PostgreSQL app role
(``app.db.roles``) keeps the application's own credentials from rewriting history at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select

from app.audit.chain import ChainHead, canonical_json, timestamp_text, verify_records
from app.audit.models import AuditChainHead, AuditEntry
from app.audit.service import CHAIN_HEAD_ID, iter_records
from app.core.signing import ALGORITHM, Signer, fingerprint, verify_signature
from app.db.base import utcnow

logger = logging.getLogger("unlearn.audit")

FORMAT = "unlearn-audit-checkpoint/v1"
# An entry may be dated this much before the checkpoint it follows without being called
# forged: clocks of several hosts writing the same log may disagree a little.
CLOCK_SKEW_S = 5.0


class CheckpointStore(Protocol):
    location: str

    def append(self, document: dict[str, Any]) -> None: ...

    def latest(self) -> dict[str, Any] | None: ...


class LocalCheckpointStore:
    """A JSON-lines file opened for appending only; each line is fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.location = str(self.path)

    def append(self, document: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (canonical_json(document) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def latest(self) -> dict[str, Any] | None:
        """The last complete line, read from the end (the file only grows)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                end = handle.tell()
                block, data = 4096, b""
                while end > 0:
                    start = max(0, end - block)
                    handle.seek(start)
                    data = handle.read(end - start) + data
                    end = start
                    lines = [line for line in data.split(b"\n") if line.strip()]
                    if len(lines) >= 2 or (lines and end == 0):
                        return json.loads(lines[-1])
        except FileNotFoundError:
            return None
        return None


class S3CheckpointStore:
    """One object per checkpoint under an S3 prefix (fsspec/s3fs). Names sort by seq, so
    the latest is the greatest name. With ``retain_days``, each object is written with
    COMPLIANCE-mode object lock until then (the bucket must have object lock enabled)."""

    def __init__(self, url: str, endpoint_url: str | None = None,
                 retain_days: int | None = None):
        import fsspec

        self.location = url.rstrip("/")
        options = {"client_kwargs": {"endpoint_url": endpoint_url}} if endpoint_url else {}
        self.fs = fsspec.filesystem("s3", **options)
        self.prefix = self.location.removeprefix("s3://")
        self.retain_days = retain_days

    def append(self, document: dict[str, Any]) -> None:
        body = document["checkpoint"]
        name = f"{self.prefix}/{body['seq']:012d}-{body['time'].replace(':', '')}.json"
        extra: dict[str, Any] = {}
        if self.retain_days:
            extra = {"ObjectLockMode": "COMPLIANCE",
                     "ObjectLockRetainUntilDate": utcnow() + dt.timedelta(days=self.retain_days)}
        self.fs.pipe_file(name, canonical_json(document).encode("utf-8"), **extra)

    def latest(self) -> dict[str, Any] | None:
        try:
            names = sorted(name for name in self.fs.ls(self.prefix, detail=False, refresh=True)
                           if name.endswith(".json"))
        except FileNotFoundError:
            return None
        return json.loads(self.fs.cat_file(names[-1])) if names else None


def make_checkpoint_store(settings) -> CheckpointStore:
    if settings.audit_checkpoint_url:
        return S3CheckpointStore(settings.audit_checkpoint_url, settings.s3_endpoint_url,
                                 settings.audit_checkpoint_retain_days)
    return LocalCheckpointStore(settings.audit_checkpoint_path)


def sign_head(signer: Signer, head: ChainHead, at: dt.datetime) -> dict[str, Any]:
    body = {"format": FORMAT, "seq": head.seq, "hash": head.hash, "time": timestamp_text(at),
            "key_fingerprint_sha256": fingerprint(signer.public_key)}
    signature = signer.sign(canonical_json(body).encode("utf-8"))
    return {"checkpoint": body, "signature": {"algorithm": ALGORITHM,
                                              "value": base64.b64encode(signature).decode()}}


def read_head_locked(db) -> tuple[ChainHead, dt.datetime]:
    """The chain head and the time, read while holding the head's lock, so that every
    entry appended after this point is dated at or after the returned time."""
    with db.write_session() as session:
        statement = select(AuditChainHead.seq, AuditChainHead.head_hash).where(
            AuditChainHead.id == CHAIN_HEAD_ID)
        if session.bind.dialect.name == "postgresql":
            statement = statement.with_for_update()
        seq, digest = session.execute(statement).one()
        return ChainHead(seq, digest), utcnow()


def write_checkpoint(db, signer: Signer, store: CheckpointStore,
                     head: ChainHead | None = None, *, skip_unchanged: bool = True
                     ) -> dict[str, Any] | None:
    """Sign the current head (or ``head``, read earlier under the same lock) and append it;
    None when the store's latest checkpoint already holds that head."""
    if head is None:
        head, at = read_head_locked(db)
    else:
        at = utcnow()
    if skip_unchanged:
        latest = store.latest()
        if latest is not None and (latest["checkpoint"]["seq"], latest["checkpoint"]["hash"]) \
                == (head.seq, head.hash):
            return None
    document = sign_head(signer, head, at)
    store.append(document)
    return document


@dataclass
class CheckpointCheck:
    finding: str  # intact | missing_tail | rewritten | tampered | forged_entry | ...
    detail: str
    checkpoint_seq: int | None = None
    checkpoint_hash: str | None = None
    checkpoint_time: str | None = None
    unanchored_entries: int = 0  # entries after the checkpoint, chained but not yet signed
    location: str | None = None

    @property
    def ok(self) -> bool:
        return self.finding in ("intact", "no_checkpoint")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_signature(document: dict[str, Any], signer_public_key) -> bool:
    try:
        value = base64.b64decode(document["signature"]["value"], validate=True)
        body = document["checkpoint"]
    except (KeyError, TypeError, ValueError):
        return False
    return body.get("format") == FORMAT and verify_signature(
        signer_public_key, value, canonical_json(body).encode("utf-8"))


def check_against_checkpoint(session, document: dict[str, Any] | None, public_key,
                             location: str | None = None) -> CheckpointCheck:
    if document is None:
        return CheckpointCheck("no_checkpoint", "no checkpoint has been written yet: only the "
                               "hash chain itself was checked", location=location)
    body = document.get("checkpoint") or {}
    check = CheckpointCheck("intact", "", body.get("seq"), body.get("hash"), body.get("time"),
                            location=location)
    if not check_signature(document, public_key):
        check.finding = "checkpoint_invalid"
        check.detail = "the checkpoint's signature does not verify with the service's key"
        return check
    cp_seq, cp_hash = body["seq"], body["hash"]
    last_seq = session.scalar(select(func.max(AuditEntry.seq))) or 0
    if last_seq < cp_seq:
        check.finding = "missing_tail"
        check.detail = (f"the log ends at seq {last_seq} but the checkpoint of {body['time']} "
                        f"signed seq {cp_seq}: entries {last_seq + 1}-{cp_seq} were deleted")
        return check
    stored = (session.scalar(select(AuditEntry.entry_hash).where(AuditEntry.seq == cp_seq))
              if cp_seq > 0 else cp_hash)
    if stored != cp_hash:
        check.finding = "rewritten"
        check.detail = (f"entry seq {cp_seq} has hash {stored} but the checkpoint signed "
                        f"{cp_hash}: the chain was rewritten up to there")
        return check
    plain = verify_records(iter_records(session), head=_head(session))
    if not plain.intact:
        at_or_before = plain.broken_seq is not None and plain.broken_seq <= cp_seq
        check.finding = "tampered" if at_or_before else "forged_entry"
        check.detail = f"entry seq {plain.broken_seq}: {plain.reason}"
        return check
    check.unanchored_entries = last_seq - cp_seq
    signed_at = dt.datetime.fromisoformat(body["time"].replace("Z", "+00:00"))
    earliest = signed_at - dt.timedelta(seconds=CLOCK_SKEW_S)
    backdated = session.execute(
        select(AuditEntry.seq, AuditEntry.created_at)
        .where(AuditEntry.seq > cp_seq, AuditEntry.created_at < earliest)
        .order_by(AuditEntry.seq).limit(1)).first()
    if backdated is not None:
        check.finding = "forged_entry"
        check.detail = (f"entry seq {backdated[0]} follows the checkpoint of {body['time']} "
                        f"but is dated {timestamp_text(_aware(backdated[1]))}: it was not "
                        f"appended by the service")
        return check
    check.detail = (f"seq {cp_seq} matches the checkpoint of {body['time']}; "
                    f"{check.unanchored_entries} later entries chain correctly but are not "
                    f"covered by a checkpoint yet")
    return check


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _head(session) -> ChainHead:
    row = session.get(AuditChainHead, CHAIN_HEAD_ID)
    return ChainHead(row.seq, row.head_hash)


def checkpoint_store(ctx) -> CheckpointStore:
    store = ctx.extras.get("checkpoint_store")
    if store is None:
        store = ctx.extras["checkpoint_store"] = make_checkpoint_store(ctx.settings)
    return store


def verify_with_checkpoint(ctx, session, anchor: ChainHead | None = None) -> dict[str, Any]:
    """The chain verification (as ``verify_chain``) plus the check against the latest
    checkpoint; ``intact`` only when both hold."""
    from app.audit.service import verify_chain
    from app.core.signing import get_signer

    result = verify_chain(session, anchor).to_dict()
    store = checkpoint_store(ctx)
    check = check_against_checkpoint(session, store.latest(), get_signer(ctx).public_key,
                                     store.location)
    result["checkpoint"] = check.to_dict()
    result["intact"] = result["intact"] and check.ok
    return result


class CheckpointWriter:
    """Writes a checkpoint every ``interval_s`` on a daemon thread (when the head moved)."""

    def __init__(self, db, signer: Signer, store: CheckpointStore, interval_s: float):
        self.db, self.signer, self.store, self.interval_s = db, signer, store, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                write_checkpoint(self.db, self.signer, self.store)
            except Exception:  # the database or the store briefly unreachable: next time
                logger.exception("audit checkpoint failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

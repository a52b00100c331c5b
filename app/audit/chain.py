"""The audit log's hash chain.

Entry n stores ``entry_hash = sha256(prev_hash ‖ canonical JSON of entry n)`` where
``prev_hash`` is entry n-1's ``entry_hash`` (64 zeros for the first entry) and ``seq`` is
n. Changing, removing, reordering or inserting an entry breaks the chain at that entry;
``verify_records`` walks it and names the first entry that does not fit. The functions
here work on plain dicts so that the database, an export file and a certificate are all
checked by the same code.

The canonical form is part of the record's meaning: never change it for existing entries.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GENESIS_HASH = "0" * 64
HASHED_FIELDS = ("seq", "created_at", "actor", "action", "subject_reference",
                 "forget_request_id", "model_name", "model_version", "details")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text, no NaN: one byte string per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a metric that is undefined is recorded as null
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def normalize_details(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The details exactly as they will read back from the database (JSON round trip), so
    that the hash computed now is the hash recomputed later."""
    return json.loads(json.dumps(_finite(dict(details or {})), default=str, allow_nan=False))


def timestamp_text(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("audit timestamps carry a timezone")
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    content = {name: record.get(name) for name in HASHED_FIELDS}
    content["created_at"] = timestamp_text(record["created_at"])
    return hashlib.sha256((prev_hash + canonical_json(content)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


@dataclass
class Verification:
    intact: bool
    entries_checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    broken_id: int | None = None
    reason: str | None = None
    # With an anchor: whether the chain still holds it (None: no anchor, or the chain broke
    # before reaching it). A mismatch makes ``intact`` false, while ``chain_intact`` and the
    # head still describe the chain as it is.
    anchor_matches: bool | None = None
    chain_intact: bool | None = None

    def __post_init__(self) -> None:
        if self.chain_intact is None:
            self.chain_intact = self.intact

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.intact:
            return (f"audit log intact: {self.entries_checked} entries, "
                    f"head seq {self.head_seq} hash {self.head_hash}")
        where = f"entry seq {self.broken_seq}" + (
            f" (id {self.broken_id})" if self.broken_id is not None else "")
        if self.chain_intact:  # the chain itself verified; the anchor did not
            return (f"audit log chain intact ({self.entries_checked} entries, head seq "
                    f"{self.head_seq} hash {self.head_hash}) but ANCHOR MISMATCH: {self.reason}")
        return f"audit log BROKEN at {where}: {self.reason}"


def verify_records(records: Iterable[Mapping[str, Any]], head: ChainHead | None = None,
                   anchor: ChainHead | None = None) -> Verification:
    """Walk records in ``seq`` order. ``head`` is the database's chain-head row (catches
    entries removed from the end or appended behind the service's back); ``anchor`` is a
    (seq, hash) recorded earlier, e.g. from a certificate, that the chain must still hold."""
    previous_hash, expected_seq, checked = GENESIS_HASH, 1, 0
    anchor_seen = False
    anchor_problem: str | None = None

    def broken(record: Mapping[str, Any] | None, seq: int, reason: str) -> Verification:
        return Verification(False, checked, expected_seq - 1, previous_hash, seq,
                            record.get("id") if record else None, reason)

    for record in records:
        seq = record.get("seq")
        if seq != expected_seq:
            if isinstance(seq, int) and seq > expected_seq:
                missing = (f"entry {expected_seq} is" if seq == expected_seq + 1
                           else f"entries {expected_seq}-{seq - 1} are")
                return broken(record, seq, f"{missing} missing before it (deleted)")
            return broken(record, seq if isinstance(seq, int) else expected_seq,
                          f"has seq {seq!r} where seq {expected_seq} belongs "
                          "(duplicated or reordered)")
        if record.get("prev_hash") != previous_hash:
            return broken(record, seq,
                          "its prev_hash is not the hash of the entry before it "
                          "(an earlier entry was removed, reordered or rewritten)")
        try:
            recomputed = entry_hash(previous_hash, record)
        except (KeyError, TypeError, ValueError) as error:
            return broken(record, seq, f"cannot be hashed: {error}")
        if recomputed != record.get("entry_hash"):
            return broken(record, seq, "its content does not match its hash (it was changed)")
        if anchor is not None and seq == anchor.seq:
            anchor_seen = True
            if recomputed != anchor.hash:  # reported after the walk, with the real head
                anchor_problem = (f"entry seq {seq}'s hash differs from the expected anchor "
                                  "hash (the chain was rewritten up to here, or the anchor "
                                  "is wrong)")
        previous_hash, expected_seq, checked = recomputed, expected_seq + 1, checked + 1

    if head is not None and (head.seq != checked or head.hash != previous_hash):
        if head.seq > checked:
            return Verification(False, checked, checked, previous_hash, checked + 1, None,
                                f"the chain head says {head.seq} entries, the log ends at "
                                f"{checked}: entries after {checked} were deleted")
        if head.seq == checked:
            return Verification(False, checked, checked, previous_hash, checked, None,
                                "the last entry's hash differs from the chain head's record "
                                "(the chain was rewritten)")
        return Verification(False, checked, checked, previous_hash, head.seq + 1, None,
                            f"entries after seq {head.seq} were not appended through the "
                            f"service (the chain head is at seq {head.seq})")
    if anchor is not None and not anchor_seen:
        anchor_problem = (f"the anchor entry seq {anchor.seq} is missing (the log ends at seq "
                          f"{checked}: truncated, or the anchor is wrong)")
    if anchor_problem is not None:
        return Verification(False, checked, checked, previous_hash, reason=anchor_problem,
                            anchor_matches=False, chain_intact=True)
    return Verification(True, checked, checked, previous_hash,
                        anchor_matches=True if anchor is not None else None)

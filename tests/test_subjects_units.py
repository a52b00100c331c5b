"""Issue 10, the parts that need no model: the subject key, log redaction."""

from __future__ import annotations

import logging
import stat

from app.subjects.hashing import PREFIX, SubjectHasher, load_or_create_secret
from app.subjects.logs import RedactSubjectPaths


def test_subject_key_is_made_once_private_and_keys_the_hash(tmp_path):
    path = tmp_path / "var" / "subject-key.bin"
    secret = load_or_create_secret(path)
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret  # second start: the same key
    hasher = SubjectHasher(secret)
    digest = hasher.hash("alice@example.com")
    assert digest.startswith(PREFIX) and len(digest) == len(PREFIX) + 64
    assert "alice" not in digest and digest == hasher.hash("alice@example.com")
    assert SubjectHasher(b"another secret of 32 bytes......").hash("alice@example.com") != digest
    path.write_bytes(b"short")
    try:
        load_or_create_secret(path)
    except ValueError as error:
        assert "at least 16" in str(error)
    else:
        raise AssertionError("a too-short key was accepted")


def test_access_log_lines_never_show_a_subject_identifier():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/subjects/alice%40example.com/footprint",
                                "1.1", 200), None)
    assert RedactSubjectPaths().filter(record)
    line = record.getMessage()
    assert "alice" not in line and "/subjects/<redacted>/footprint" in line

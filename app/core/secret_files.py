"""Secrets kept in files (signing keys, HMAC secrets), made on first start."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make: Callable[[], bytes]) -> None:
    """Write ``make()`` to ``path`` (mode 0600) unless the file exists. Created through an
    exclusive temporary file and a hard link, so that two processes starting at once end up
    with the same content: the second link fails and its candidate is discarded."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, make())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if another process got there first: keep theirs
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)

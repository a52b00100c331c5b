"""A parse that waits at a gate, for tests/test_predict_bodies.py: it runs in a parsing
process, so it is importable without the test module (and torch)."""

from __future__ import annotations

import time
from pathlib import Path

from app.prediction.body_parsing import parse_predict_body

GATE_WAIT_S = 30.0  # a safety net: with the bug the gate never opens while parsing


def gated_parse(directory: str, raw: bytes, as_array: bool = False):
    """Says it started, waits until the test opens the gate, then parses; records
    whether the gate was opened while this parse was still in progress."""
    folder = Path(directory)
    (folder / "started").touch()
    deadline = time.monotonic() + GATE_WAIT_S
    while not (folder / "gate").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    (folder / "outcome").write_text("released" if (folder / "gate").exists() else "stuck")
    return parse_predict_body(raw, as_array)

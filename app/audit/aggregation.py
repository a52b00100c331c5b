"""Audit entries in aggregate for events a caller can repeat at will (failed
authentications, refused predictions): one entry per key per window, at the key's first
event in the window, carrying how many events its previous window had. A flood of
refusals then adds one entry a window, not one per try, to the append-only log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    events: int = 0


class AuditWindows:
    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys  # bounded memory when keys are sprayed
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def count(self, key: Hashable) -> int | None:
        """Count one event. Returns the previous window's count when this event opens a new
        window (write the audit entry now), None when this window already has its entry."""
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            previous = None
            if window is None or now - window.started >= self.window_s:
                previous = window.events if window is not None else 0
                window = self._windows[key] = _Window(now)
                if len(self._windows) > self.max_keys:
                    self._forget_old(now)
            window.events += 1
        return previous

    def _forget_old(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now - w.started >= self.window_s]:
            del self._windows[key]

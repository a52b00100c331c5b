"""Throttling of failed authentication, with the ``limits`` library (the one slowapi uses).

Two moving-window counters of *failures*:

- per client address: once an address has failed ``UNLEARN_AUTH_FAILURES_PER_ADDRESS``
  times in the window, its requests are answered ``429`` with ``Retry-After`` *before*
  any key is checked, so a guesser learns nothing more until the window moves on;
- per key prefix (the first 12 characters of the presented key): once a prefix has
  failed ``UNLEARN_AUTH_FAILURES_PER_KEY_PREFIX`` times, a wrong key with that prefix is
  answered ``429`` instead of ``401``. A *valid* key is still checked and admitted, so
  attackers spread over many addresses cannot lock a key's owner out by hammering its
  prefix.

A valid key never counts as a failure and never resets anything. Failures are audited in
aggregate: one ``auth.failures`` entry per address per window (at its first failure in
the window, carrying the count of the address's previous window), never one per try.

Storage is in memory by default: each API process counts on its own, so with N replicas
an attacker gets up to N times the limit (put a shared ``limits`` storage such as Redis
behind ``Throttle(storage=...)`` to count across replicas).
"""

from __future__ import annotations

import logging
import math
import time

from limits import parse, storage, strategies

from app.audit.aggregation import AuditWindows
from app.core.errors import ServiceError

logger = logging.getLogger("unlearn.auth")

PREFIX_LENGTH = 12


class TooManyFailuresError(ServiceError):
    status_code = 429
    code = "too_many_failed_authentications"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class Throttle:
    def __init__(self, per_address: str, per_prefix: str, backend=None):
        self.per_address = parse(per_address)
        self.per_prefix = parse(per_prefix)
        self.limiter = strategies.MovingWindowRateLimiter(backend or storage.MemoryStorage())
        self.window_s = self.per_address.get_expiry()
        self._audit_windows = AuditWindows(self.window_s)

    @staticmethod
    def prefix(token: str) -> str:
        return token[:PREFIX_LENGTH]

    def _retry_after(self, limit, key: str) -> int:
        reset = self.limiter.get_window_stats(limit, "auth", key).reset_time
        return max(1, math.ceil(reset - time.time()))

    def check_address(self, address: str) -> None:
        """Before the key is looked at: refuse an address over its failure limit."""
        if not self.limiter.test(self.per_address, "auth", address):
            raise TooManyFailuresError(
                "too many failed authentications from this address; retry later",
                self._retry_after(self.per_address, address))

    def record_failure(self, address: str, token: str) -> tuple[bool, int | None]:
        """Count a failure. Returns (throttled now, failures in the address's previous
        window if this is its first failure of a new window, for the audit entry; None
        when this window already has its entry)."""
        # hit() is False once the limit was already used up: the first N failures of a
        # window are answered 401, the ones after that 429.
        address_ok = self.limiter.hit(self.per_address, "auth", address)
        prefix_ok = self.limiter.hit(self.per_prefix, "auth-prefix", self.prefix(token))
        previous = self._audit_windows.count(address)
        return (not prefix_ok or not address_ok), previous

    def refuse(self, address: str, token: str, throttled: bool, message: str,
               unauthenticated: type[ServiceError]) -> ServiceError:
        """The error for a failed attempt: 429 once throttled, else the usual 401."""
        if throttled:
            by_address = self.limiter.get_window_stats(self.per_address, "auth",
                                                       address).remaining == 0
            limit, key, namespace = ((self.per_address, address, "auth") if by_address
                                     else (self.per_prefix, self.prefix(token), "auth-prefix"))
            reset = self.limiter.get_window_stats(limit, namespace, key).reset_time
            return TooManyFailuresError("too many failed authentications; retry later",
                                        max(1, math.ceil(reset - time.time())))
        return unauthenticated(message)


def client_address(request) -> str:
    return request.client.host if request.client else "unknown"


def audit_failure_window(db, address: str, token: str, interface: str,
                         previous_window_failures: int, window_s: int) -> None:
    """The one audit entry for this address's window (its own transaction)."""
    from app.audit.service import AuditAction, record

    try:
        with db.session() as session:
            record(session, AuditAction.auth_failures, "system:auth",
                   details={"address": address, "interface": interface,
                            "key_prefix": Throttle.prefix(token) if token else "",
                            "window_s": window_s,
                            "previous_window_failures": previous_window_failures})
    except Exception:  # never let auditing a failure turn into a 500
        logger.exception("could not audit failed authentications from %s", address)

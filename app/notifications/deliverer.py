"""The background deliverer: a small thread that sends due webhook deliveries, so that
neither the worker nor an HTTP request ever waits on a receiver.

Any number of deliverers (one per API process and per worker process by default) may
share one database: claims are conditional, and a claim whose process died expires
after the attempt's timeout, so the delivery is attempted again later.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx

from app.notifications import service
from app.notifications.signing import webhook_secret
from app.observability.logs import log_context
from app.observability.metrics import observe_webhook_attempt

logger = logging.getLogger("unlearn.webhooks")

RECONCILE_EVERY_S = 10.0


class WebhookDeliverer:
    def __init__(self, ctx, deliverer_id: str):
        self.ctx = ctx
        self.settings = ctx.settings
        self.deliverer_id = deliverer_id
        self._secret: bytes | None = None
        self.wakeup = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0
        # Proxies from the environment are ignored: the connection must go to the address
        # that was checked against the allow-list.
        self._client = httpx.Client(follow_redirects=False, trust_env=False)

    @property
    def secret(self) -> bytes:
        """Read (or, the first time, made) when needed: a service that allows no callback
        host never writes a secret file."""
        if self._secret is None:
            self._secret = webhook_secret(self.settings)
        return self._secret

    @property
    def lock_s(self) -> float:
        return 2 * self.settings.webhook_timeout_s + 5

    def run_once(self) -> int:
        """Sweep (at most every RECONCILE_EVERY_S), then attempt every due delivery once;
        returns the number of attempts made."""
        now = time.monotonic()
        if now - self._last_reconcile >= RECONCILE_EVERY_S:
            self._last_reconcile = now
            service.reconcile(self.ctx.db)
        made = 0
        for delivery_id in service.due_deliveries(self.ctx.db):
            if self._stop.is_set():
                break
            delivery = service.claim(self.ctx.db, delivery_id, self.deliverer_id, self.lock_s)
            if delivery is None:
                continue  # another deliverer has it
            with log_context(forget_request_id=delivery.forget_request_id,
                             webhook_delivery_id=delivery.id):
                result = service.attempt(self._client, self.settings, self.secret, delivery)
                outcome = service.finish(self.ctx.db, self.settings, delivery,
                                         self.deliverer_id, result)
                observe_webhook_attempt(self.ctx, outcome)
                level = logging.INFO if outcome == "delivered" else logging.WARNING
                logger.log(level, "webhook delivery attempt %d: %s", delivery.attempts, outcome,
                           extra={"outcome": outcome, "status_code": result.status_code,
                                  "error": result.error})
            made += 1
        return made

    def run_forever(self) -> None:
        with log_context(worker_id=self.deliverer_id):
            while not self._stop.is_set():
                self.wakeup.clear()
                try:
                    self.run_once()
                except Exception:  # database briefly unreachable: try again next poll
                    logger.exception("webhook deliverer loop error")
                self.wakeup.wait(self.settings.webhook_poll_s)

    def start(self) -> None:
        if self.settings.webhook_hosts:
            _ = self.secret  # made (or a bad one refused) at start where callbacks can happen
        self.ctx.extras[service.WAKEUP_KEY] = self.wakeup
        self._thread = threading.Thread(target=self.run_forever, name="unlearn-webhooks",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None
                              else self.settings.webhook_timeout_s + 5)
        if self.ctx.extras.get(service.WAKEUP_KEY) is self.wakeup:
            self.ctx.extras.pop(service.WAKEUP_KEY, None)
        self._client.close()

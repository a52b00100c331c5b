"""Completion webhooks: a forget request's ``callback_url`` is told, signed, when the
request reaches a final status. Deliveries live in an outbox table, so one pending when a
process dies is delivered by the next deliverer that runs."""

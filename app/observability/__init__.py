"""Structured logs with request/forget-request/worker IDs and the metric counters every
layer may use; low in the layers (it imports nothing of the service). What reads the
flows' tables (``app.operations.DatabaseCollector``) and the HTTP side (request IDs,
access log, ``/metrics``: ``app.api.observability``) sit above the flows."""

"""Operations: Prometheus metrics, structured logs with request/forget-request/worker IDs."""

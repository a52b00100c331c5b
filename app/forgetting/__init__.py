"""Forget requests: intake, validation, execution by a worker, publication of the result."""

"""Unlearning-as-a-service: versioned CNNs, forget requests, audit log, predictions."""

__version__ = "0.1.0"

"""Serving predictions from any model version."""

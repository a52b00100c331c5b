"""Signed erasure certificates."""

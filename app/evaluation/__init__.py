"""Metrics of a model version and of a forget request (before/after on named sets)."""

"""Verified forgetting: acceptance criteria, calibration, the per-sample membership test."""

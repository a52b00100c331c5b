"""Cross-cutting plumbing: settings, database session, error types."""

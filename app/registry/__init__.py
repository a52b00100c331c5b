"""Model registry: immutable numbered versions, lineage, artifacts, the production pointer."""

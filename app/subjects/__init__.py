"""Data subjects: erasure by subject, footprints, superseded versions and their purge."""

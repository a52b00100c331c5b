"""Registered datasets: reading them from their formats, validating them all-or-nothing,
packing an immutable copy, and loading it back as the ``ImageData`` every part of the
service trains, forgets and measures on."""

"""The HTTP face: the routes (``routes/``, one module per resource) and what they share:
dependencies and their aliases, errors, pagination, field selection, limits."""

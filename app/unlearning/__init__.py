"""Unlearning methods. Each is one module exposing ``METHOD`` behind the interface in
``base.py``; ``catalog.py`` maps the API's method names to them."""

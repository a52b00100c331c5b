"""Paths of a model version in the API. The default model's versions keep the design
card's paths (``/models/3``); another model's carry ``?model=NAME``."""

from __future__ import annotations

from urllib.parse import quote


def version_path(model_name: str, version: int, default_model: str, suffix: str = "") -> str:
    path = f"/models/{version}{suffix}"
    if model_name != default_model:
        path += f"?model={quote(model_name)}"
    return path

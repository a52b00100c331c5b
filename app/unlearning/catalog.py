"""The methods the service offers, by the name used in ``POST /forget-requests``."""

from __future__ import annotations

from app.unlearning import output_dampening
from app.unlearning.base import UnlearningMethod

METHODS: dict[str, UnlearningMethod] = {
    module.METHOD.name: module.METHOD for module in (output_dampening,)
}


def get_method(name: str) -> UnlearningMethod | None:
    return METHODS.get(name)

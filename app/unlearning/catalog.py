"""The methods the service offers, by the name used in ``POST /forget-requests``."""

from __future__ import annotations

from pathlib import Path

from app.unlearning import finetune, fisher, output_dampening, retrain, sisa, ssd
from app.unlearning.base import UnlearningMethod

METHODS: dict[str, UnlearningMethod] = {
    module.METHOD.name: module.METHOD
    for module in (output_dampening, ssd, fisher, finetune, retrain, sisa)
}


def get_method(name: str) -> UnlearningMethod | None:
    return METHODS.get(name)


def configure_caches(cache_dir: Path) -> None:
    """Point methods that cache per-version work (SSD's [D]) at the service's cache dir."""
    ssd.METHOD.cache = ssd.ImportanceCache(Path(cache_dir) / "importances")

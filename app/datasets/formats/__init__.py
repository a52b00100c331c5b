"""One reader per dataset format, each ``read(path, classes) -> RawDataset``."""

from __future__ import annotations

from collections.abc import Callable

from app.core.errors import InvalidInputError
from app.datasets.formats import idx, imagefolder, manifest
from app.datasets.formats.common import RawDataset

READERS: dict[str, Callable[[str, list[str] | None], RawDataset]] = {
    "idx": idx.read,
    "imagefolder": imagefolder.read,
    "manifest": manifest.read,
}
FORMATS = tuple(READERS)


def read_dataset(format: str, path: str, classes: list[str] | None = None) -> RawDataset:
    """Read and check a whole dataset; ``InvalidInputError`` names the row and problem."""
    reader = READERS.get(format)
    if reader is None:
        raise InvalidInputError(f"unknown dataset format {format!r}: one of "
                                f"{', '.join(FORMATS)}", "format")
    return reader(path, classes)

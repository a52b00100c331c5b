"""Registering, reading and listing datasets: the domain logic the routes, the CLI and
bootstrap call.

Registration is all-or-nothing: the whole dataset is read and checked first (nothing is
written on any error), then packed into a temporary folder renamed into place, then the
row and its audit entry commit in one transaction; if that commit fails, the packed
folder is removed again. A registered dataset is never changed: its name is taken for good.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.service import AuditAction, record
from app.core.errors import ConflictError, InvalidInputError, NotFoundError
from app.datasets import storage
from app.datasets.checksum import raw_checksum
from app.datasets.formats import FORMATS, read_dataset
from app.datasets.formats.common import check_classes
from app.datasets.formats.idx import find_files
from app.datasets.formats.manifest import is_url
from app.datasets.models import Dataset

logger = logging.getLogger("unlearn.datasets")

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)
MAX_PATH_LENGTH = 1000
MNIST_DATASET = "mnist"
# The official MNIST files (what app.ml.data computes and the shipped model card records):
# other files under UNLEARN_DATA_DIR/MNIST/raw (Fashion-MNIST put where MNIST goes) are
# not registered as "mnist".
MNIST_CHECKSUM = "sha256:1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b"


class RegisteredDataset(NamedTuple):
    row: Dataset
    # Pixel-mode conversions made while reading, e.g. "RGBA -> RGB (alpha dropped): 3 image(s)".
    notes: list[str]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"dataset name {name!r} is not allowed: 1-100 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit", "name")
    return name


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise InvalidInputError("path is empty", "path")
    if "\x00" in path:
        raise InvalidInputError("path contains a NUL character", "path")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInputError(f"path is longer than {MAX_PATH_LENGTH} characters", "path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError("path is not valid Unicode text", "path") from None
    return path if is_url(path) else str(Path(path).expanduser().resolve())


def _refuse_taken(session: Session, name: str) -> None:
    if session.get(Dataset, name) is not None:
        raise ConflictError(f"a dataset named {name!r} is already registered (registered "
                            f"datasets never change: register changed data under a new name)",
                            "name")


def register_dataset(db, dataset_dir: Path, *, name: str, format: str, path: str,
                     classes: list[str] | None = None, actor: str,
                     expected_checksum: str | None = None) -> RegisteredDataset:
    """Read, check, pack and record a dataset. ``InvalidInputError`` (the field and, for a
    bad sample, its row or file), ``ConflictError`` for a taken name. With
    ``expected_checksum``, data with another checksum is refused before anything is
    written."""
    check_name(name)
    if format not in FORMATS:
        raise InvalidInputError(f"unknown dataset format {format!r}: one of "
                                f"{', '.join(FORMATS)}", "format")
    source = _check_path(path)
    classes = check_classes(classes)
    with db.session() as session:
        _refuse_taken(session, name)  # early: before minutes of reading
    try:
        raw = read_dataset(format, source, classes)
    except OSError as error:  # anything a reader did not turn into a row-level message
        raise InvalidInputError(f"cannot read {source}: {error}", "path") from None
    checksum = raw_checksum(raw)
    if expected_checksum is not None and checksum != expected_checksum:
        raise InvalidInputError(
            f"the data at {source} has checksum {checksum}, not the expected "
            f"{expected_checksum}: it is other data than {name!r} must be", "path")
    storage_key = storage.pack(raw, dataset_dir, name, checksum)
    try:
        with db.write_session() as session:
            _refuse_taken(session, name)
            row = Dataset(
                name=name, format=format, source=source, class_names=list(raw.class_names),
                image_shape=list(raw.image_shape), train_size=int(len(raw.train_labels)),
                test_size=int(len(raw.test_labels)), checksum=checksum,
                has_sample_ids=raw.has_sample_ids, has_subjects=raw.has_subjects,
                storage_key=storage_key, created_by=actor,
            )
            session.add(row)
            session.flush()
            record(session, AuditAction.dataset_registered, actor, details={
                "dataset": name, "format": format, "source": source, "checksum": checksum,
                "class_names": list(raw.class_names), "image_shape": list(raw.image_shape),
                "train_size": row.train_size, "test_size": row.test_size,
                "has_sample_ids": raw.has_sample_ids, "has_subjects": raw.has_subjects,
                "storage_key": storage_key, "conversions": raw.notes or [],
            })
    except IntegrityError:
        storage.remove(dataset_dir, storage_key)
        raise ConflictError(f"a dataset named {name!r} is already registered", "name") from None
    except BaseException:
        storage.remove(dataset_dir, storage_key)
        raise
    logger.info("registered dataset %s (%s, %d train / %d test, %s)", name, format,
                row.train_size, row.test_size, checksum)
    return RegisteredDataset(row, raw.notes or [])


def get_dataset(session: Session, name: str) -> Dataset:
    # A name that could never have been registered is simply unknown (and never reaches
    # the database: PostgreSQL refuses NUL characters in text).
    row = session.get(Dataset, name) if isinstance(name, str) and _NAME.fullmatch(name) else None
    if row is None:
        raise NotFoundError(f"no dataset named {name!r} is registered", "name")
    return row


def list_datasets(session: Session, limit: int = 100,
                  after: str | None = None) -> tuple[list[Dataset], str | None]:
    """Datasets by name; returns the page and the name to continue after (or None)."""
    statement = select(Dataset).order_by(Dataset.name).limit(limit + 1)
    if after is not None:
        statement = statement.where(Dataset.name > after)
    rows = list(session.scalars(statement))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].name
    return rows, None


def ensure_mnist_dataset(db, settings) -> Dataset:
    """Register MNIST as dataset ``mnist`` (format ``idx``) from ``settings.data_dir``
    unless it is registered already: from ``MNIST/raw`` (plain or gzipped files), else
    downloaded there by torchvision as ``app.ml.data.load_mnist`` does. Files that are not
    the official MNIST (another checksum) are refused with ``InvalidInputError``."""
    with db.session() as session:
        existing = session.get(Dataset, MNIST_DATASET)
    if existing is not None:
        return existing
    data_dir = Path(settings.data_dir)
    raw_dir = data_dir / "MNIST" / "raw"
    if find_files(raw_dir) is None:
        from app.ml.data import download_mnist

        download_mnist(data_dir)  # one-line DataUnavailableError when offline
    try:
        return register_dataset(db, settings.dataset_dir, name=MNIST_DATASET, format="idx",
                                path=str(raw_dir), actor="system:bootstrap",
                                expected_checksum=MNIST_CHECKSUM).row
    except ConflictError:  # another process registered it meanwhile
        with db.session() as session:
            return get_dataset(session, MNIST_DATASET)

"""``manifest``: a CSV or Parquet file listing the samples, the format for personal data.

Columns: ``sample_id`` (string, unique across the file), ``path`` (relative to the
manifest's folder, absolute, or a URL fsspec opens, ``s3://`` included), ``label`` (a class
name or an integer class index), ``split`` (``train`` or ``test``), and optionally
``subject_id`` (the data subject; several rows may share one, an empty value means none).
Other columns are ignored. Rows are numbered from 1, not counting the CSV header; a
training image's integer ID is its position among the train rows.

Classes: the list given at registration (its order gives the indices), else, when every
label is an integer, "0" .. "<highest>", else the sorted distinct labels. A label matches
a class by name first; an integer label is read as an index only when no class name is
itself an integer (so names "3", "7" are never confused with indices).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import InvalidInputError
from app.datasets.formats.common import (
    ImageProblem,
    ImageStack,
    RawDataset,
    check_classes,
    check_not_empty,
)

REQUIRED = ("sample_id", "path", "label", "split")
SPLITS = ("train", "test")
_INTEGER = re.compile(r"^[+-]?\d+$")


def is_url(value: str) -> bool:
    return "://" in value


@dataclass
class Row:
    number: int  # 1-based, header not counted
    sample_id: str
    path: str
    label: str
    split: str
    subject_id: str | None

    def where(self) -> str:
        return f"manifest row {self.number} (sample_id {self.sample_id!r})"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _open_manifest(path: str) -> bytes:
    try:
        if is_url(path):
            import fsspec

            with fsspec.open(path, "rb") as handle:
                return handle.read()
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"manifest not found: {path}", "path") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory, not a CSV or Parquet manifest",
                                "path") from None
    except (OSError, ValueError, ImportError) as error:
        raise InvalidInputError(f"cannot read the manifest {path}: {error}", "path") from None


def _columns_and_rows(path: str) -> tuple[list[str], list[dict[str, Any]]]:
    if not is_url(path) and Path(path).is_dir():
        raise InvalidInputError(f"{path} is a directory, not a CSV or Parquet manifest",
                                "path")
    lowered = path.lower().split("?")[0]
    if lowered.endswith(".parquet") or lowered.endswith(".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = _open_manifest(path)
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as error:
            raise InvalidInputError(f"{path}: not a readable Parquet file ({error})",
                                    "path") from None
        return list(table.column_names), table.to_pylist()
    if lowered.endswith(".csv"):
        data = _open_manifest(path)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InvalidInputError(f"{path}: not UTF-8 text ({error})", "path") from None
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = columns
            rows = list(reader)
        except csv.Error as error:
            raise InvalidInputError(f"{path}: malformed CSV ({error})", "path") from None
        return columns, rows
    raise InvalidInputError(f"{path}: a manifest is a .csv or .parquet file", "path")


def _parse_rows(path: str) -> tuple[list[Row], bool]:
    columns, records = _columns_and_rows(path)
    for column in REQUIRED:
        if column not in columns:
            raise InvalidInputError(
                f"the manifest has no {column!r} column (required: {', '.join(REQUIRED)}; "
                f"found: {', '.join(columns) or 'none'})", "path")
    has_subjects = "subject_id" in columns
    rows: list[Row] = []
    first_seen: dict[str, int] = {}
    for number, record in enumerate(records, start=1):
        row = Row(number=number, sample_id=_text(record.get("sample_id")),
                  path=_text(record.get("path")), label=_text(record.get("label")),
                  split=_text(record.get("split")).lower(),
                  subject_id=_text(record.get("subject_id")) or None if has_subjects else None)
        if not row.sample_id:
            raise InvalidInputError(f"manifest row {number}: sample_id is empty", "path")
        if row.sample_id in first_seen:
            raise InvalidInputError(f"{row.where()}: duplicate sample_id (first used in row "
                                    f"{first_seen[row.sample_id]})", "path")
        first_seen[row.sample_id] = number
        if row.split not in SPLITS:
            raise InvalidInputError(f"{row.where()}: split {_text(record.get('split'))!r} is "
                                    f"not 'train' or 'test'", "path")
        if not row.path:
            raise InvalidInputError(f"{row.where()}: path is empty", "path")
        if not row.label:
            raise InvalidInputError(f"{row.where()}: label is empty", "path")
        rows.append(row)
    has_subjects = has_subjects and any(row.subject_id is not None for row in rows)
    return rows, has_subjects


def _shown(names: list[str]) -> str:
    return str(names) if len(names) <= 12 else f"[{', '.join(map(repr, names[:12]))}, ...]"


def _resolve_labels(rows: list[Row], classes: list[str] | None) -> tuple[list[str], list[int]]:
    names = check_classes(classes)
    if names is None:
        if all(_INTEGER.match(row.label) for row in rows):
            values = [int(row.label) for row in rows]
            for row, value in zip(rows, values):
                if value < 0:
                    raise InvalidInputError(f"{row.where()}: label {value} is negative",
                                            "path")
            return [str(index) for index in range(max(values) + 1)], values
        names = sorted({row.label for row in rows})
    index = {name: position for position, name in enumerate(names)}
    by_index = not any(_INTEGER.match(name) for name in names)
    labels = []
    for row in rows:
        position = index.get(row.label)
        if position is None and by_index and _INTEGER.match(row.label):
            value = int(row.label)
            if 0 <= value < len(names):
                position = value
            else:
                raise InvalidInputError(f"{row.where()}: label {value} is outside the "
                                        f"{len(names)} classes {_shown(names)}", "path")
        if position is None:
            raise InvalidInputError(f"{row.where()}: label {row.label!r} is not one of the "
                                    f"classes {_shown(names)}", "path")
        labels.append(position)
    return names, labels


def _loader(base: str, base_is_url: bool, row: Row):
    target = row.path
    remote = is_url(target) or base_is_url
    # Joined once, as a string: 100,000 pathlib objects cost more than the reads.
    local = None if remote else os.path.join(base, target)

    def load() -> bytes:
        try:
            if remote:
                import fsspec

                url = target if is_url(target) else f"{base}/{target.lstrip('/')}"
                with fsspec.open(url, "rb") as handle:
                    return handle.read()
            assert local is not None  # set whenever the file is not remote
            with open(local, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ImageProblem(f"image file not found: {target}") from None
        except IsADirectoryError:
            raise ImageProblem(f"{target} is a directory, not an image") from None
        except (OSError, ValueError, ImportError) as error:
            raise ImageProblem(f"cannot read {target}: {error}") from None
    return load


def read(path: str, classes: list[str] | None = None) -> RawDataset:
    rows, has_subjects = _parse_rows(path)
    names, labels = _resolve_labels(rows, classes) if rows else (check_classes(classes) or [], [])
    train = [(row, label) for row, label in zip(rows, labels) if row.split == "train"]
    test = [(row, label) for row, label in zip(rows, labels) if row.split == "test"]
    check_not_empty("train", len(train), path)
    check_not_empty("test", len(test), path)

    base_is_url = is_url(path)
    base = path.rsplit("/", 1)[0] if base_is_url else str(Path(path).parent)
    stack = ImageStack()
    train_images = stack.read([_loader(base, base_is_url, row) for row, _ in train], None,
                              lambda i: train[i][0].where())
    test_images = stack.read([_loader(base, base_is_url, row) for row, _ in test],
                             train_images.shape[1:], lambda i: test[i][0].where())
    return RawDataset(
        train_images=train_images,
        train_labels=np.array([label for _, label in train], dtype=np.int64),
        test_images=test_images,
        test_labels=np.array([label for _, label in test], dtype=np.int64),
        class_names=names,
        train_sample_ids=[row.sample_id for row, _ in train],
        test_sample_ids=[row.sample_id for row, _ in test],
        train_subject_ids=[row.subject_id for row, _ in train] if has_subjects else None,
        test_subject_ids=[row.subject_id for row, _ in test] if has_subjects else None,
        notes=stack.note_lines(),
    )

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.datasets.service import NAME_PATTERN

DatasetFormat = Literal["idx", "imagefolder", "manifest"]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=100,
                      description="Unique and permanent; letters, digits, '.', '_', '-'.")
    format: DatasetFormat = Field(description="How the data at `path` is laid out.")
    path: str = Field(min_length=1, max_length=1000, description=(
        "On the server: a directory (idx, imagefolder) or a .csv/.parquet manifest, or a "
        "URL fsspec opens (manifest only, e.g. s3://bucket/data/manifest.parquet)."))
    classes: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000,
        description="Class names in index order; default: from the data (see docs).")


class DatasetLinks(BaseModel):
    self: str


class DatasetRead(BaseModel):
    name: str
    format: str
    source: str
    class_names: list[str]
    num_classes: int
    image_shape: list[int] = Field(description="[channels, height, width]")
    train_size: int
    test_size: int
    checksum: str
    has_sample_ids: bool = Field(description="Samples carry the dataset's own string IDs.")
    has_subjects: bool = Field(description="Samples name their data subject.")
    storage_key: str
    created_by: str
    created_at: dt.datetime
    links: DatasetLinks


class DatasetRegistered(DatasetRead):
    notes: list[str] = Field(description="Pixel-mode conversions made while reading.")


class DatasetList(BaseModel):
    items: list[DatasetRead]
    next_cursor: str | None

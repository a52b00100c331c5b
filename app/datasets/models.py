"""The ``datasets`` table. A row is written once, with its packed copy, and never updated:
changed data is a new dataset under a new name."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UtcDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    format: Mapped[str] = mapped_column(String(32))
    # The path or URL the data was read from (informational: the packed copy is what loads).
    source: Mapped[str] = mapped_column(String(1000))
    class_names: Mapped[list[str]] = mapped_column(JSON)
    image_shape: Mapped[list[int]] = mapped_column(JSON)  # [channels, height, width]
    train_size: Mapped[int] = mapped_column(Integer)
    test_size: Mapped[int] = mapped_column(Integer)
    # "sha256:<hex>" over the content (app/datasets/checksum.py); model cards name it.
    checksum: Mapped[str] = mapped_column(String(80), index=True)
    has_sample_ids: Mapped[bool] = mapped_column(Boolean)
    has_subjects: Mapped[bool] = mapped_column(Boolean)
    # Folder of the packed copy, relative to UNLEARN_DATASET_DIR.
    storage_key: Mapped[str] = mapped_column(String(300))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

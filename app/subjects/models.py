"""The record of purged artifacts. Version rows are never updated; a purge adds a row here."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UtcDateTime, utcnow


class VersionPurge(Base):
    __tablename__ = "version_purges"
    __table_args__ = (UniqueConstraint("model_name", "version",
                                       name="uq_version_purges_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_path: Mapped[str] = mapped_column(String(500))
    # The request that superseded the version (the earliest completed one).
    superseded_by: Mapped[str] = mapped_column(String(36))
    purged_by: Mapped[str] = mapped_column(String(200))
    purged_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)

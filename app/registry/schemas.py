from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel


class VersionLinks(BaseModel):
    self: str
    metrics: str
    parent: str | None = None
    forget_request: str | None = None


class VersionRead(BaseModel):
    model_name: str
    version: int
    parent_version: int | None
    is_production: bool
    kind: str
    architecture: str
    forget_request_id: str | None
    method: str
    params: dict[str, Any]
    forgotten_classes: list[int]
    forgotten_sample_count: int
    # The dataset's own IDs (integers for MNIST): always in the single-version view, in a
    # list only with ?include=forgotten_sample_ids (omitted otherwise, never null).
    forgotten_sample_ids: list[int | str] | None = None
    artifact_path: str
    artifact_sha256: str
    test_accuracy: float | None
    created_by: str
    created_at: dt.datetime
    model_card: dict[str, Any] | None = None  # in a list only with ?include=model_card
    # Issue 10: 'current', 'superseded' (still holds data a completed forget request
    # erased) or 'purged' (superseded, artifact deleted).
    status: str = "current"
    superseded_by: str | None = None
    use_instead: int | None = None
    purged_at: dt.datetime | None = None
    links: VersionLinks


class VersionList(BaseModel):
    items: list[VersionRead]
    next_cursor: str | None


class VersionMetrics(BaseModel):
    model_name: str
    version: int
    parent_version: int | None
    forgotten_classes: list[int]
    forgotten_sample_count: int
    test: dict[str, Any] | None
    forget_request_id: str | None
    forget_request_metrics: dict[str, Any] | None = None


class RegisteredModelRead(BaseModel):
    name: str
    dataset: str
    architecture: str
    is_default: bool
    production_version: int | None
    version_count: int
    num_classes: int | None = None
    class_names: list[str] | None = None
    image_shape: list[int] | None = None
    created_by: str
    created_at: dt.datetime
    links: dict[str, str]


class RegisteredModelList(BaseModel):
    items: list[RegisteredModelRead]

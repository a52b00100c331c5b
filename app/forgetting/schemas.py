"""Request and response bodies of the forget-request API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.verification.criteria import AcceptanceOverrides

ClassLabel = Annotated[int, Field(strict=True, ge=0, le=9)]
SampleId = Annotated[int, Field(strict=True)]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class ForgetRequestCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{
                "classes": [2],
                "method": "output_dampening",
                "params": {"alpha": 0.01},
                "requested_by": "privacy.officer@example.com",
                "subject_reference": "GDPR-2026-0042",
                "reason": "Art. 17 erasure request",
            }]
        },
    )

    model_version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="Source version; default: the production version."
    )
    classes: list[ClassLabel] = Field(
        default_factory=list, max_length=10, description="Classes to forget (0-9)."
    )
    sample_ids: list[SampleId] = Field(
        default_factory=list,
        description="Training-split indices (0-59999) to forget; methods that forget "
        "individual samples only.",
    )
    method: Text = Field(min_length=1, max_length=64, description="Unlearning method name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The method's own parameters, validated per method."
    )
    requested_by: Text = Field(min_length=1, max_length=200)
    subject_reference: Text = Field(
        min_length=1, max_length=200, description="The data subject / case reference."
    )
    reason: Text = Field(default="", max_length=2000)
    acceptance: AcceptanceOverrides | None = Field(
        default=None, description="Override the default acceptance criteria for this "
        "request's target kind (see docs/verification.md).")


class RequestLinks(BaseModel):
    self: str
    source_version: str
    result_version: str | None = None


class ForgetRequestMetrics(BaseModel):
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class ForgetRequestRead(BaseModel):
    id: str
    status: str
    model_name: str
    source_version: int
    result_version: int | None
    method: str
    params: dict[str, Any]
    classes: list[int]
    sample_ids: list[int]
    already_forgotten_sample_ids: list[int] = Field(
        default_factory=list,
        description="Requested sample IDs that the source version's lineage already forgot.")
    requested_by: str
    subject_reference: str
    reason: str
    error: str | None
    metrics: ForgetRequestMetrics
    acceptance: dict[str, Any] | None = Field(
        default=None, description="The thresholds the new version is held to.")
    verification: dict[str, Any] | None = Field(
        default=None, description="passed, criteria [{name, threshold, value, passed, "
        "available, note}], failed, membership evidence, notes, calibration.")
    progress: float
    attempts: int = Field(description="Claims so far (a vanished worker's claim counts).")
    worker_id: str | None = Field(default=None, description="The worker holding it now.")
    heartbeat_at: dt.datetime | None = None
    lease_expires_at: dt.datetime | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: float | None
    links: RequestLinks


class ForgetRequestList(BaseModel):
    items: list[ForgetRequestRead]
    next_cursor: str | None


class MethodInfo(BaseModel):
    name: str
    description: str
    supports_classes: bool
    supports_samples: bool
    model_kinds: list[str] = Field(default_factory=lambda: ["cnn"],
                                   description="Registry model kinds the method works on.")
    params_schema: dict[str, Any]


class MethodList(BaseModel):
    items: list[MethodInfo]

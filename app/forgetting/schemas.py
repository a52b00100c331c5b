"""Request and response bodies of the forget-request API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from app.verification.criteria import AcceptanceOverrides

def _index_or_name(max_length: int):
    """An integer (never a bool) or a non-empty string: one error location per item, where
    a plain union would report one per union member."""
    def check(value: object) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and 0 < len(value) <= max_length and "\x00" not in value:
            return value
        raise ValueError(f"must be an integer or a non-empty string of at most "
                         f"{max_length} characters")
    return check


# A class by index (0-based, in the dataset's class list) or by name.
ClassLabel = Annotated[int | str, PlainValidator(_index_or_name(200)), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]})]
# A training sample by the dataset's own ID: an integer for MNIST-style datasets (the
# index in the training split), a string for imagefolder/manifest datasets.
SampleId = Annotated[int | str, PlainValidator(_index_or_name(500)), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]})]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
# A data subject's identifier as the dataset's manifest names it (never stored in clear).
SubjectId = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_no_nul)]


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

    model_name: str | None = Field(
        default=None, min_length=1, max_length=100,
        description="The model to forget from; default: the service's default model.")
    model_version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="Source version; default: the production version."
    )
    classes: list[ClassLabel] = Field(
        default_factory=list, max_length=1000,
        description="Classes to forget, by index in the dataset's class list or by name.",
    )
    sample_ids: list[SampleId] = Field(
        default_factory=list,
        description="Training samples to forget, by the dataset's own sample ID (MNIST: the "
        "index in the training split, 0-59999); methods that forget individual samples only.",
    )
    subject_ids: list[SubjectId] | None = Field(
        default=None,
        description="Data subjects to forget: every training sample of each subject in the "
        "model's dataset (its manifest's subject_id column), resolved at filing. Stored "
        "only as keyed hashes. An empty list is refused.")
    promote: bool = Field(
        default=False,
        description="Promote the result version automatically when the production version "
        "still holds the data this request erases.")
    method: Text = Field(min_length=1, max_length=64, description="Unlearning method name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The method's own parameters, validated per method."
    )
    requested_by: Text = Field(min_length=1, max_length=200)
    subject_reference: Text = Field(
        min_length=1, max_length=200, description="The data subject / case reference."
    )
    reason: Text = Field(default="", max_length=2000)
    callback_url: Text | None = Field(
        default=None, max_length=2000,
        description="Told with a signed POST when the request reaches a final status; its "
        "host must be on the service's allow-list (docs/operations.md).")
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
    class_names: list[str] = Field(default_factory=list,
                                   description="Names of the forgotten classes.")
    sample_ids: list[int | str] = Field(description="The dataset's own IDs of the samples.")
    already_forgotten_sample_ids: list[int | str] = Field(
        default_factory=list,
        description="Requested sample IDs that the source version's lineage already forgot.")
    requested_by: str
    subject_reference: str
    reason: str
    subject_hashes: list[str] = Field(
        default_factory=list,
        description="Keyed hashes (HMAC-SHA256) of the data subjects the request named.")
    subject_sample_count: int | None = Field(
        default=None, description="Training samples those subjects owned at filing.")
    promote: bool = False
    production_left_superseded: int | None = Field(
        default=None,
        description="Set at completion when the production version still held the erased "
        "data (and was not promoted away): that version.")
    notice: str | None = Field(default=None, description="What the caller must know.")
    error: str | None
    metrics: ForgetRequestMetrics | None = Field(
        default=None, description="Before/after metrics (in a list only with ?include=metrics).")
    source_version_was_default: bool | None = Field(
        default=None, description="On filing: true when no model_version was given and the "
        "request starts from the production version.")
    queue: str = Field(default="heavy", description="Job queue: 'light' (output layer "
                       "only) or 'heavy' (passes over the data).")
    phase: str | None = Field(default=None, description="What the running attempt is doing "
                              "('metrics', 'importance', 'dampening', 'training epoch 2/3', "
                              "'publishing'); the last phase once finished.")
    progress: float = Field(description="Fraction of the current phase done (1.0 when "
                            "completed).")
    attempts: int = Field(description="Attempts so far (one whose worker vanished counts).")
    worker_id: str | None = Field(default=None, description="The execution holding it now "
                                  "(host:pid:attempt).")
    heartbeat_at: dt.datetime | None = Field(default=None, description="When the running "
                                             "attempt last wrote progress.")
    acceptance: dict[str, Any] | None = Field(
        default=None, description="The thresholds the new version is held to.")
    verification: dict[str, Any] | None = Field(
        default=None, description="passed, criteria [{name, threshold, value, passed, "
        "available, note}], failed, membership evidence, notes, calibration.")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: float | None
    callback_url: str | None = None
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

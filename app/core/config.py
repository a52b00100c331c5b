"""Service settings, read from environment variables with the prefix ``UNLEARN_``.

A bad value is reported with the variable's name and the value it had, so that an
operator can fix the deployment without reading a traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "UNLEARN_"


class ConfigError(RuntimeError):
    """A setting could not be parsed; the message names the variable and its value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/unlearn.db",
        description="SQLAlchemy URL of the registry/audit database.",
    )
    artifact_dir: Path = Field(default=Path("./models"), description="Where model files live.")
    data_dir: Path = Field(default=Path("./data"), description="torchvision MNIST root.")
    base_model_path: Path = Field(
        default=Path("./models/base/mnist-cnn-base.safetensors"),
        description="Shipped base weights (with a .json model card) registered on first start.",
    )
    cache_dir: Path = Field(default=Path("./var/cache"), description="Feature caches.")
    device: str = Field(default="cpu", description="'cpu', 'cuda' or 'cuda:N'.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    model_name: str = Field(default="mnist-cnn", description="Name of the hosted model.")
    embedded_worker: bool = Field(
        default=True, description="Run forget requests on a thread inside the API process."
    )
    max_predict_batch: int = Field(default=1024, ge=1, le=100_000)
    max_sample_ids: int = Field(default=10_000, ge=1, le=60_000)
    model_cache_size: int = Field(default=8, ge=1, le=1024)
    wait_timeout_s: float = Field(default=120.0, gt=0)
    # Registered datasets (app/datasets): their packed, immutable copies and how many
    # loaded ones stay in memory.
    dataset_dir: Path = Field(default=Path("./var/datasets"),
                              description="Where registered datasets' packed copies live.")
    dataset_cache_size: int = Field(default=4, ge=1, le=256,
                                    description="Loaded datasets kept in memory.")
    # Security: API keys, certificates, request limits.
    signing_key_path: Path = Field(
        default=Path("./var/signing-key.pem"),
        description="Ed25519 private key that signs erasure certificates; made on first start.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="The first admin key, instead of a generated one.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                description="Larger request bodies get 413.")

    # Durable execution (several API and worker processes on one database).
    artifact_url: str | None = Field(
        default=None,
        description="Object-store location of artifacts, e.g. 's3://bucket/prefix'; when "
        "unset, artifacts live in UNLEARN_ARTIFACT_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph...); default AWS."
    )
    lease_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="How long a worker's claim on a request lasts without a heartbeat.",
    )
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="Lease renewal interval; default lease_s / 3."
    )
    max_attempts: int = Field(
        default=3, ge=1, le=100,
        description="Attempts (claims) before a request whose worker keeps vanishing fails.",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0,
        description="On SIGTERM, how long a worker may finish its request before releasing it.",
    )
    data_subset: str | None = Field(
        default=None, pattern=r"^\d+,\d+(,\d+)?$",
        description="'TRAIN,TEST[,SEED]': serve a seeded MNIST subset (quick runs and tests).",
    )
    # Data subjects (issue 10): erasure by subject, superseded versions, purging.
    subject_key_path: Path = Field(
        default=Path("./var/subject-key.bin"),
        description="HMAC-SHA256 secret that hashes subject identifiers; made on first start.",
    )
    subject_key: SecretStr | None = Field(
        default=None, description="The subject-hashing secret itself, instead of the file.")
    max_subject_ids: int = Field(default=100, ge=1, le=10_000,
                                 description="Most subject_ids in one forget request.")
    data_controller: str = Field(default="", max_length=500,
                                 description="The data controller named on certificates.")
    purge_superseded_after_days: float | None = Field(
        default=None, ge=0,
        description="When set, delete the artifacts of versions superseded for this many "
        "days, on a schedule (UNLEARN_PURGE_INTERVAL_S).")
    purge_interval_s: float = Field(default=3600.0, gt=0,
                                    description="How often the scheduled purge runs.")
    # Test-only: makes every execution take this long (in steps that heartbeat and report
    # progress), so fault tests can kill a process mid-request. Never set in production.
    test_execution_delay_s: float = Field(default=0.0, ge=0, le=3600)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value == "cpu" or value == "cuda" or (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            return value
        raise ValueError("must be 'cpu', 'cuda' or 'cuda:N'")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = ENV_PREFIX + field.upper()
        shown = os.environ.get(variable, item.get("input"))
        parts.append(f"{variable}={shown!r}: {item['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, raising ConfigError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

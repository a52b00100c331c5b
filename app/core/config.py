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
    max_waits_per_key: int = Field(
        default=4, ge=0, le=10_000,
        description="?wait=true calls one API key may hold at once; over it: 202 at once.")
    readiness_timeout_s: float = Field(
        default=2.0, gt=0, le=60,
        description="/readyz reports the database unreachable after this long.")
    # Security: API keys, certificates, request limits.
    signing_key_path: Path = Field(
        default=Path("./var/signing-key.pem"),
        description="Ed25519 private key that signs erasure certificates; made on first start.",
    )
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="The first admin key, instead of a generated one.")
    audit_checkpoint_path: Path = Field(
        default=Path("./var/audit-checkpoints.jsonl"),
        description="Append-only file of signed audit chain-head checkpoints.")
    audit_checkpoint_url: str | None = Field(
        default=None, pattern=r"^s3://[^/]+(/.*)?$",
        description="'s3://bucket/prefix' for checkpoints instead of the local file.")
    audit_checkpoint_retain_days: int | None = Field(
        default=None, ge=1, le=36500,
        description="Object-lock retention (COMPLIANCE) of each S3 checkpoint object.")
    audit_checkpoint_interval_s: float = Field(
        default=60.0, ge=0, description="Seconds between checkpoints (0: only on start and "
        "on certificates).")
    auth_failures_per_address: str = Field(
        default="20/minute",
        description="Failed authentications one client address may make per window "
        "(a 'limits' string such as '20/minute'); over it: 429 + Retry-After.")
    auth_failures_per_key_prefix: str = Field(
        default="20/minute",
        description="Failed authentications per key prefix (first 12 characters) per "
        "window; over it a wrong key gets 429, a valid one still passes.")
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
    # Test-only: makes every execution take this long (in steps that heartbeat and report
    # progress), so fault tests can kill a process mid-request. Never set in production.
    test_execution_delay_s: float = Field(default=0.0, ge=0, le=3600)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3

    @field_validator("auth_failures_per_address", "auth_failures_per_key_prefix")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError("must be a rate such as '20/minute' or '100/hour'") from None
        return value

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _check_bootstrap_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = weak_key_reason(value.get_secret_value())
            if problem:
                raise ValueError(f"the bootstrap admin key {problem}")
        return value

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


MIN_BOOTSTRAP_KEY_LENGTH = 32
SECRET_FIELDS = {"bootstrap_admin_key"}


def weak_key_reason(key: str) -> str | None:
    """Why a chosen admin key does not look random enough (None: it does). At least 32
    characters, at least 10 distinct ones, no character filling more than a quarter of it,
    and not a short pattern repeated."""
    if len(key) < MIN_BOOTSTRAP_KEY_LENGTH:
        return (f"has {len(key)} characters; use at least {MIN_BOOTSTRAP_KEY_LENGTH} random "
                f"ones (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if len(set(key)) < 10 or max(key.count(c) for c in set(key)) > len(key) / 4:
        return "does not look random (too few distinct characters); generate one"
    for period in range(1, len(key) // 2 + 1):
        if all(key[i] == key[i % period] for i in range(len(key))):
            return "is a repeated pattern, not a random key; generate one"
    return None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = ENV_PREFIX + field.upper()
        shown = os.environ.get(variable, item.get("input"))
        if field in SECRET_FIELDS:
            shown = "<hidden>"  # never echo a secret into logs
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

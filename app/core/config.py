"""Service settings, read from environment variables with the prefix ``UNLEARN_``.

A bad value is reported with the variable's name and the value it had, so that an
operator can fix the deployment without reading a traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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
    # Dynamic batching of predictions (app/prediction/batching.py).
    predict_batching: bool = Field(
        default=True,
        description="Gather concurrent prediction calls for one version into one forward pass.",
    )
    predict_batch_max_size: int = Field(
        default=256, ge=1, le=100_000,
        description="Most images in one gathered forward pass (a larger single call runs alone).",
    )
    predict_batch_max_wait_ms: float = Field(
        default=2.0, ge=0.0, le=1000.0,
        description="How long the first call of a batch may wait for others to join it.",
    )
    max_sample_ids: int = Field(default=10_000, ge=1, le=60_000)
    model_cache_size: int = Field(default=8, ge=1, le=1024)
    wait_timeout_s: float = Field(default=120.0, gt=0)
    # Registered datasets (app/datasets): their packed, immutable copies and how many
    # loaded ones stay in memory.
    dataset_dir: Path = Field(default=Path("./var/datasets"),
                              description="Where registered datasets' packed copies live.")
    dataset_cache_size: int = Field(default=4, ge=1, le=256,
                                    description="Loaded datasets kept in memory.")
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
    predict_parse_offload_bytes: int = Field(
        default=1024 * 1024, ge=0,
        description="Prediction bodies at least this large are read only after the "
        "caller's key has passed, and parsed in a separate process (JSON parsing holds "
        "the GIL, so a thread would still stall the event loop); smaller ones are parsed "
        "in the request's own thread hop, after its key check, which is faster for them.")
    predict_parse_processes: int = Field(
        default=2, ge=0, le=64,
        description="Processes that parse large prediction bodies (0: parse every body on "
        "the event loop).")
    refused_prediction_audit_window_s: int = Field(
        default=60, ge=1, le=86_400,
        description="Refused predictions (a corrupted artifact) are audited once per key, "
        "model version and window, with the previous window's count.")

    # Verification: the acceptance criteria a request's new version must meet (defaults
    # per target kind; a request may override them under "acceptance").
    acceptance_classes_forget_accuracy_max: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Class targets: highest test accuracy on the forgotten classes.")
    acceptance_classes_retain_drop_max: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Class targets: largest fall of the other classes' test accuracy.")
    acceptance_samples_retain_drop_max: float = Field(
        default=0.01, ge=0.0, le=1.0,
        description="Sample targets: largest fall of the test accuracy.")
    acceptance_samples_membership_fpr: float = Field(
        default=0.01, gt=0.0, le=0.5,
        description="Sample targets: false-positive rate of the per-sample membership test.")
    acceptance_samples_membership_significance: float = Field(
        default=0.05, gt=0.0, lt=0.5,
        description="Sample targets: significance of 'more flagged than chance'.")
    acceptance_samples_require_membership: bool = Field(
        default=True,
        description="Sample targets are held to the per-sample membership test (which needs "
        "the lineage's shadow bank). Off: they are held to the retained-accuracy criterion "
        "only and the membership figures, where available, are reported for information; "
        "the verification names the criteria it applied. A request may still ask for the "
        "membership criterion under 'acceptance'.")
    shadow_dir: Path | None = Field(
        default=None, description="Shadow-model banks of the per-sample membership test; "
        "default UNLEARN_CACHE_DIR/shadows.")
    shadow_min_count: int = Field(
        default=4, ge=2, le=1024,
        description="Fewest shadow models for the per-sample membership test to count.")

    # Durable execution (several API and worker processes on one database).
    artifact_url: str | None = Field(
        default=None,
        description="Object-store location of artifacts, e.g. 's3://bucket/prefix'; when "
        "unset, artifacts live in UNLEARN_ARTIFACT_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph...); default AWS."
    )
    # The job engine. SQLite: one in-process executor (no leases). PostgreSQL: procrastinate
    # workers, whose heartbeats tell a live worker from a stalled or vanished one.
    heartbeat_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="How often a procrastinate worker records that it is alive.",
    )
    stalled_after_s: float = Field(
        default=30.0, gt=0, le=86400,
        description="A worker silent this long is stalled: its request is retried elsewhere.",
    )
    max_attempts: int = Field(
        default=3, ge=1, le=100,
        description="Attempts before a request whose worker keeps vanishing fails.",
    )
    job_retention_hours: int = Field(
        default=168, ge=1, le=87600,
        description="Finished procrastinate jobs (and their events) older than this are "
        "removed, hourly; forget requests and the audit log are kept.",
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0,
        description="On SIGTERM, how long a worker may finish its request before releasing it.",
    )
    worker_alive_file: Path | None = Field(
        default=None,
        description="A worker touches this file every few seconds while its event loop "
        "runs (container health checks read its age).",
    )
    wait_poll_s: float = Field(
        default=0.5, gt=0, le=5,
        description="How often ?wait=true re-reads a request that another process runs "
        "when no finish notification wakes it (PostgreSQL sends one at once; SQLite has "
        "no cross-process signal).",
    )
    data_subset: str | None = Field(
        default=None, pattern=r"^\d+,\d+(,\d+)?$",
        description="'TRAIN,TEST[,SEED]': serve a seeded MNIST subset (quick runs and tests).",
    )
    # Operations (docs/operations.md): metrics, logs, completion webhooks.
    metrics_enabled: bool = Field(
        default=True,
        description="Prometheus metrics at GET /metrics and the HTTP instrumentation; off: "
        "no /metrics route and no per-request metric work.",
    )
    metrics_require_key: bool = Field(
        default=False, description="GET /metrics needs an API key with the auditor role.")
    worker_metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="`unlearn worker` serves its own Prometheus metrics on this port.")
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per line (the container default).")
    access_log: bool = Field(default=True, description="One log line per HTTP request.")
    webhook_allowed_hosts: str = Field(
        default="", max_length=10_000,
        description="Comma-separated host names (or '*.example.com') that callback_url may "
        "name; empty: every callback_url is refused.",
    )
    webhook_allow_private_addresses: bool = Field(
        default=False,
        description="Allow callback hosts that resolve to loopback, private, link-local or "
        "other non-public addresses.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for webhook signatures (instead of the file).")
    webhook_secret_path: Path = Field(
        default=Path("./var/webhook-secret"),
        description="Webhook signing secret, made on first start when UNLEARN_WEBHOOK_SECRET "
        "is unset.",
    )
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_backoff_s: float = Field(
        default=2.0, gt=0, le=3600, description="Delay before the 2nd attempt; doubles after.")
    webhook_backoff_max_s: float = Field(default=600.0, gt=0, le=86_400)
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=120)
    webhook_poll_s: float = Field(
        default=1.0, gt=0, le=60, description="How often the deliverer looks for due deliveries.")
    webhook_deliverer: bool = Field(
        default=True, description="Run the webhook deliverer thread in this process.")

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
    def uses_job_engine(self) -> bool:
        """PostgreSQL runs requests on procrastinate; SQLite on the in-process executor."""
        return self.database_url.startswith("postgresql")

    @model_validator(mode="after")
    def _stall_needs_missed_heartbeats(self) -> "Settings":
        # A live worker must get at least two heartbeats in before it can look stalled.
        if self.stalled_after_s < 2 * self.heartbeat_s:
            raise ValueError(f"{ENV_PREFIX}STALLED_AFTER_S={self.stalled_after_s} must be at "
                             f"least twice {ENV_PREFIX}HEARTBEAT_S={self.heartbeat_s}")
        return self

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

    @property
    def shadow_root(self) -> Path:
        return self.shadow_dir if self.shadow_dir is not None else self.cache_dir / "shadows"

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value == "cpu" or value == "cuda" or (
            value.startswith("cuda:") and value[5:].isdigit()
        ):
            return value
        raise ValueError("must be 'cpu', 'cuda' or 'cuda:N'")

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _check_hosts(cls, value: str) -> str:
        for host in allowed_host_list(value):
            bare = host[2:] if host.startswith("*.") else host
            if _is_ip_literal(bare):
                continue
            if not bare or any(c in bare for c in "/:@ ?#") or "*" in bare:
                raise ValueError(f"{host!r} is not a host name (or '*.domain')")
        return value

    @property
    def webhook_hosts(self) -> tuple[str, ...]:
        return allowed_host_list(self.webhook_allowed_hosts)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def _is_ip_literal(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return False


def allowed_host_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip().lower().rstrip(".") for part in value.split(",") if part.strip())


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
        if not item["loc"]:  # a rule across settings: its message names the variables
            parts.append(item["msg"].removeprefix("Value error, "))
            continue
        field = str(item["loc"][0]) if item["loc"] else "?"
        variable = ENV_PREFIX + field.upper()
        shown = os.environ.get(variable, item.get("input"))
        if field in SECRET_FIELDS:
            shown = "<hidden>"  # never echo a secret into logs
        parts.append(f"{variable}={shown!r}: {item['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, raising ConfigError with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()

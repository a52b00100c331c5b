"""Service settings, read from environment variables with the prefix ``UNLEARN_``.

A bad value is reported with the variable's name and the value it had, so that an
operator can fix the deployment without reading a traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
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

"""Console settings, read like the service's (prefix ``UNLEARN_``) but kept apart so that
the console adds no field to the core settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.config import ENV_PREFIX


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    console_secret: str | None = Field(
        default=None, min_length=32,
        description="Key that signs console session cookies. Unset: a random key is "
        "created once under the cache directory and reused by every process.",
    )
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    console_secure_cookie: bool = Field(
        default=False, description="Mark the session cookie Secure (serve over HTTPS).")

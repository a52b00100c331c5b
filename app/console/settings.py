"""Console settings, read like the service's (prefix ``UNLEARN_``) but kept apart so that
the console adds no field to the core settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.config import ENV_PREFIX


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    console_session_hours: float = Field(
        default=8.0, gt=0, le=24 * 30,
        description="How long a console login lasts (logout or revoking the key ends it "
        "sooner).")
    console_secure_cookie: bool = Field(
        default=True, description="Mark the console's cookies Secure: browsers send them "
        "over HTTPS only. Set false for plain-HTTP local use (`make run` does).")

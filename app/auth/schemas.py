from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from app.auth.service import Role


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$",
                      description="Unique; recorded as the actor of everything the key does.")
    roles: list[Role] = Field(min_length=1, max_length=4)
    expires_at: dt.datetime | None = Field(default=None, description="With a timezone.")


class ApiKeyRead(BaseModel):
    id: str
    name: str
    roles: list[str]
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself. Shown only this once; store it now.")


class ApiKeyList(BaseModel):
    items: list[ApiKeyRead]

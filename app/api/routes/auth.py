"""Key management over HTTP, for admins (the CLI offers the same: `unlearn keys ...`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.api.deps import ActorDep, SessionDep
from app.auth import service
from app.auth.deps import require
from app.auth.models import ApiKey
from app.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyRead
from app.auth.service import Role

router = APIRouter(tags=["api keys"], dependencies=[Depends(require(Role.admin))])


def to_read(key: ApiKey) -> ApiKeyRead:
    return ApiKeyRead(id=key.id, name=key.name, roles=key.roles, created_by=key.created_by,
                      created_at=key.created_at, expires_at=key.expires_at,
                      revoked_at=key.revoked_at)


@router.post("/keys", status_code=201, response_model=ApiKeyCreated)
def create_key(body: ApiKeyCreate, session: SessionDep,
               actor: ActorDep) -> ApiKeyCreated:
    key, token = service.create_key(session, name=body.name,
                                    roles=[role.value for role in body.roles],
                                    created_by=actor, expires_at=body.expires_at)
    return ApiKeyCreated(**to_read(key).model_dump(), key=token)


@router.get("/keys", response_model=ApiKeyList)
def list_keys(session: SessionDep) -> ApiKeyList:
    return ApiKeyList(items=[to_read(key) for key in service.list_keys(session)])


@router.post("/keys/{key_id}/revoke", response_model=ApiKeyRead)
def revoke_key(key_id: Annotated[str, Path(max_length=100)],
               session: SessionDep,
               actor: ActorDep) -> ApiKeyRead:
    return to_read(service.revoke_key(session, key_id, actor))

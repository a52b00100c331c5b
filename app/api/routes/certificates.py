from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.api.deps import CtxDep, SessionDep
from app.auth.deps import require
from app.auth.service import Role
from app.certificates import service
from app.certificates.schemas import ErasureCertificate, PublicKey
from app.core.signing import get_signer

router = APIRouter(tags=["certificates"])


@router.get("/forget-requests/{request_id}/certificate", response_model=ErasureCertificate,
            dependencies=[Depends(require(Role.privacy_officer, Role.auditor))])
def read_certificate(request_id: Annotated[str, Path(max_length=64)],
                     ctx: CtxDep,
                     session: SessionDep) -> ErasureCertificate:
    """A signed erasure certificate for a completed request (409 while it is not)."""
    return ErasureCertificate.model_validate(service.issue_certificate(ctx, session, request_id))


@router.get("/certificates/public-key", response_model=PublicKey)
def read_public_key(ctx: CtxDep) -> PublicKey:
    """Public: the key that verifies certificates (`unlearn certificate verify --public-key`)."""
    return PublicKey(**service.public_key_info(get_signer(ctx)))

"""What an erasure certificate adds for a privacy officer (issue 10): the subjects' keyed
hashes and sample count, the controller's reference, and the versions that still held the
erased data with whether their artifacts are purged. Computed at each issue, so a
certificate re-issued after a purge reports it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.chain import timestamp_text
from app.forget_requests.models import ForgetRequest
from app.registry.models import ModelVersion
from app.subjects.supersession import VersionStatus, covers, version_states


def erasure_section(session: Session, request: ForgetRequest,
                    data_controller: str = "") -> dict[str, Any]:
    states = version_states(session, request.model_name)
    superseded = []
    for version in session.scalars(select(ModelVersion)
                                   .where(ModelVersion.model_name == request.model_name)
                                   .order_by(ModelVersion.version)):
        state = states.get(version.version)
        if version.version == request.result_version or covers(version, request):
            continue
        superseded.append({
            "version": version.version, "artifact_sha256": version.artifact_sha256,
            "status": state.status.value if state else VersionStatus.superseded.value,
            "artifact_purged": bool(state and state.status is VersionStatus.purged),
            "purged_at": (timestamp_text(state.purged_at)
                          if state and state.purged_at else None),
        })
    return {
        "data_controller": {"name": data_controller,
                            "reference": request.subject_reference},
        "subjects": {"subject_hashes": request.target_subject_hashes or [],
                     "hash_algorithm": "HMAC-SHA256",
                     "sample_count": request.subject_sample_count},
        "samples_erased": len(request.target_sample_ids or ()),
        "received_at": timestamp_text(request.created_at),
        "completed_at": timestamp_text(request.finished_at) if request.finished_at else None,
        "superseded_versions": superseded,
    }

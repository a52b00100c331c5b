"""A data subject's footprint: where the service holds (or held) their training samples.

Answers an access request (GDPR Art. 15) and checks an erasure (Art. 17): per dataset the
number of the subject's training samples; per model, which versions were trained on data
that includes them, which versions' lineage forgot them, and the requests that did.
Subjects are looked up by their keyed hash; the identifier itself is used only to compute
that hash and is neither stored nor logged.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from app.audit.service import record
from app.datasets.models import Dataset
from app.forget_requests.models import ForgetRequest
from app.registry.models import ModelVersion, RegisteredModel
from app.subjects.hashing import get_hasher
from app.subjects.resolution import hashed_index
from app.subjects.supersession import SubjectAuditAction, version_states

logger = logging.getLogger("unlearn.subjects")


def _subject_datasets(ctx, session) -> dict[str, Any]:
    """Loaded datasets that name subjects, by name: registered ones that have a subject_id
    column, and those the hosted models use."""
    rows = {row.name: row for row in session.scalars(select(Dataset))}
    names = {name for name, row in rows.items() if row.has_subjects}
    names |= {m.dataset_name for m in session.scalars(select(RegisteredModel))
              if m.dataset_name not in rows or rows[m.dataset_name].has_subjects}
    loaded: dict[str, Any] = {}
    for name in sorted(names):
        try:
            data = ctx.datasets.get(name)
        except Exception:  # an unavailable dataset is reported, not fatal
            logger.warning("footprint: dataset %r could not be loaded", name)
            loaded[name] = None
            continue
        if data.subject_keys is not None:
            loaded[name] = data
    return loaded


def footprint(ctx, subject_id: str, actor: str) -> dict[str, Any]:
    hasher = get_hasher(ctx)
    subject_hash = hasher.hash(subject_id)
    with ctx.db.session() as session:
        datasets = _subject_datasets(ctx, session)
        owned = {name: (hashed_index(data, hasher).get(subject_hash, []) if data else None)
                 for name, data in datasets.items()}
        dataset_items = [{"dataset": name, "sample_count": len(ids) if ids is not None else None,
                          "available": ids is not None}
                         for name, ids in owned.items()]
        models = []
        for model in session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)):
            ids = set(owned.get(model.dataset_name) or ())
            requests = [r for r in session.scalars(
                select(ForgetRequest).where(ForgetRequest.model_name == model.name)
                .order_by(ForgetRequest.created_at))
                if subject_hash in (r.target_subject_hashes or ())
                or (ids and ids & set(r.target_sample_ids or ()))]
            if not ids and not requests:
                continue
            states = version_states(session, model.name)
            versions = []
            for version in session.scalars(select(ModelVersion)
                                           .where(ModelVersion.model_name == model.name)
                                           .order_by(ModelVersion.version)):
                remaining = ids - set(version.forgotten_sample_ids or ())
                state = states[version.version]
                versions.append({
                    "version": version.version, "parent_version": version.parent_version,
                    "includes_subject": bool(remaining),
                    "subject_samples_remaining": len(remaining),
                    "forget_request_id": version.forget_request_id,
                    "status": state.status.value, "superseded_by": state.superseded_by,
                    "is_production": version.version == model.production_version,
                })
            models.append({
                "model_name": model.name, "dataset": model.dataset_name,
                "sample_count": len(ids),
                "production_version": model.production_version,
                "production_includes_subject": any(
                    v["includes_subject"] and v["is_production"] for v in versions),
                "versions_including": [v["version"] for v in versions if v["includes_subject"]],
                "versions_forgotten": [v["version"] for v in versions
                                       if ids and not v["includes_subject"]],
                "versions": versions,
                "forget_requests": [{
                    "id": r.id, "status": r.status, "method": r.method,
                    "source_version": r.source_version, "result_version": r.result_version,
                    "subject_sample_count": r.subject_sample_count,
                    "named_subject": subject_hash in (r.target_subject_hashes or ()),
                } for r in requests],
            })
        record(session, SubjectAuditAction.footprint_read, actor,
               details={"subject_hash": subject_hash,
                        "sample_count": sum(len(ids or ()) for ids in owned.values())})
    return {
        "subject_hash": subject_hash, "subject_key_id": hasher.key_id,
        "found": any(ids for ids in owned.values()) or bool(models),
        "datasets": dataset_items, "models": models,
    }

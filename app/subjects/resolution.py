"""Resolving ``subject_ids`` of a forget request to the training samples of those subjects.

Resolution happens once, at filing: the request then carries the samples' training IDs
(forgotten like ``sample_ids``) and the subjects' keyed hashes, never their identifiers.
Error messages name a subject by its position in the list, so that not even a log line
of a refused request holds an identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.errors import InvalidInputError
from app.ml.data import ImageData
from app.subjects.hashing import SubjectHasher


@dataclass(frozen=True)
class ResolvedSubjects:
    hashes: list[str]      # keyed hashes of the subjects, sorted, duplicates collapsed
    sample_ids: list[int]  # training IDs of all their samples, sorted


def subject_index(data: ImageData) -> dict[str, list[int]] | None:
    """Subject -> training IDs in the dataset's training split (None: the dataset names no
    subjects). Built once per loaded dataset."""
    if data.subject_keys is None:
        return None
    index = data.__dict__.get("_subject_index")
    if index is None:
        index = {}
        for train_id in sorted(set(data.train_ids.tolist())):
            if 0 <= train_id < len(data.subject_keys):
                subject = data.subject_keys[train_id]
                if subject:
                    index.setdefault(subject, []).append(train_id)
        object.__setattr__(data, "_subject_index", index)
    return index


def hashed_index(data: ImageData, hasher: SubjectHasher) -> dict[str, list[int]]:
    """Subject hash -> training IDs (for footprints, which look subjects up by hash)."""
    cache = data.__dict__.setdefault("_hashed_subject_index", {})
    index = cache.get(hasher.key_id)
    if index is None:
        index = {hasher.hash(subject): ids
                 for subject, ids in (subject_index(data) or {}).items()}
        cache[hasher.key_id] = index
    return index


def resolve_subjects(data: ImageData, dataset_name: str, subject_ids: list[str],
                     max_subject_ids: int, hasher: SubjectHasher) -> ResolvedSubjects:
    if not subject_ids:
        raise InvalidInputError("subject_ids is an empty list: name at least one data "
                                "subject, or leave the field out", "subject_ids")
    if len(subject_ids) > max_subject_ids:
        raise InvalidInputError(
            f"{len(subject_ids)} subject IDs exceed the limit of {max_subject_ids} per "
            f"request (UNLEARN_MAX_SUBJECT_IDS)", "subject_ids")
    index = subject_index(data)
    if index is None:
        raise InvalidInputError(
            f"dataset {dataset_name!r} names no data subjects (it has no subject_id column): "
            f"forget its samples by sample_ids instead", "subject_ids")
    sample_ids: set[int] = set()
    for position, subject in enumerate(subject_ids):
        owned = index.get(subject)
        if not owned:
            raise InvalidInputError(
                f"subject_ids[{position}] has no training samples in dataset "
                f"{dataset_name!r}; nothing of this subject can be forgotten here",
                f"subject_ids[{position}]")
        sample_ids.update(owned)
    return ResolvedSubjects(hashes=sorted({hasher.hash(s) for s in subject_ids}),
                            sample_ids=sorted(sample_ids))


def prepare_subjects(ctx, model_name: str, body, data: ImageData):
    """(body with subject_ids replaced by their hashes, ResolvedSubjects or None)."""
    if body.subject_ids is None:
        return body, None
    from app.subjects.hashing import get_hasher

    subjects = resolve_subjects(data, ctx.dataset_of(model_name), body.subject_ids,
                                ctx.settings.max_subject_ids, get_hasher(ctx))
    return body.model_copy(update={"subject_ids": subjects.hashes}), subjects

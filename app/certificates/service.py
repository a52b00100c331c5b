"""Erasure certificates: what was asked, what was done, what it achieved, signed.

A certificate is ``{"certificate": {...}, "signature": {...}}``; the signature is Ed25519
over the canonical JSON (``app.audit.chain.canonical_json``) of the ``certificate`` part.
It carries the request's audit entries with their chain hashes and the chain head at
issue time, so that an auditor can check offline both the signature and that each entry
hashes to what the chain recorded (``unlearn certificate verify FILE``), and online that
the live chain still contains that head (``GET /audit-log/verify?anchor_seq=&anchor_hash=``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app import __version__
from app.audit.chain import canonical_json, entry_hash, normalize_details, timestamp_text
from app.audit.service import chain_head, iter_records
from app.core.signing import (
    ALGORITHM,
    Signer,
    fingerprint,
    get_signer,
    load_public_key,
    public_key_bytes,
    public_key_pem,
    verify_signature,
)
from app.context import ServiceContext
from app.core.errors import ConflictError
from app.db.base import utcnow
from app.forget_requests.models import RequestStatus
from app.forget_requests.service import get_request
from app.registry.service import get_version
from app.subjects.certificate import erasure_section
from app.unlearning.catalog import get_method

FORMAT = "unlearn-erasure-certificate/v1"

APPROXIMATE_STATEMENT = (
    "This model version was produced by {method}, an approximate unlearning method. It "
    "changes the trained weights so that the model behaves, on the measured sets, as if it "
    "had not learned the forgotten data: the 'after' metrics record that behaviour at issue "
    "time. It does NOT retrain the model without the data, so it does not guarantee that "
    "no information derived from the forgotten data remains in the weights (for output-layer "
    "methods the feature extractor is unchanged), nor that the result is indistinguishable "
    "from a model never trained on it. Membership-inference figures, where present, are "
    "empirical estimates from one attack, not proofs. Earlier model versions, which did "
    "learn the data, remain in the registry and the artifact store unless deleted separately."
)
EXACT_STATEMENT = (
    "This model version was produced by {method}, which retrains from scratch without the "
    "forgotten data: no weight of the result was fitted to that data. Earlier model "
    "versions, which did learn the data, remain in the registry and the artifact store "
    "unless deleted separately."
)


def public_key_info(signer: Signer) -> dict[str, str]:
    return {
        "algorithm": ALGORITHM,
        "public_key_pem": public_key_pem(signer.public_key),
        "public_key_base64": base64.b64encode(public_key_bytes(signer.public_key)).decode(),
        "fingerprint_sha256": fingerprint(signer.public_key),
    }


def _without_confusion_matrices(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {name: ({k: v for k, v in value.items() if k != "confusion_matrix"}
                   if isinstance(value, dict) else value)
            for name, value in metrics.items()}


def _verification_summary(verification: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checked claims: each criterion, the membership evidence's headline figures, and
    what the evidence cannot show (a test without power says so here)."""
    if verification is None:  # filed before verification existed
        return None
    membership = verification.get("membership") or {}
    headline: dict[str, Any] = {"available": membership.get("available", False)}
    if headline["available"]:
        headline.update(shadow_models=membership["shadow_models"], fpr=membership["fpr"],
                        source_forget=membership["source"]["forget"],
                        result_forget=membership["result"]["forget"],
                        result_retained_control=membership["result"]["retained_control"])
    else:
        headline["reason"] = membership.get("reason")
    return {"passed": verification["passed"], "criteria": verification["criteria"],
            "exact": verification.get("exact", False), "membership": headline,
            "notes": verification.get("notes", []),
            **({"calibration_chosen": verification["calibration"].get("chosen")}
               if "calibration" in verification else {})}


def _version_summary(row) -> dict[str, Any]:
    return {"model_name": row.model_name, "version": row.version,
            "parent_version": row.parent_version, "method": row.method,
            "artifact_sha256": row.artifact_sha256,
            "forgotten_classes": row.forgotten_classes,
            "forgotten_sample_count": len(row.forgotten_sample_ids)}


def build_certificate(session: Session, request_id: str,
                      data_controller: str = "") -> dict[str, Any]:
    """The unsigned certificate body for a completed request."""
    request = get_request(session, request_id)
    if request.status == RequestStatus.unverified.value:
        failed = (request.verification or {}).get("failed") or []
        raise ConflictError(
            f"forget request {request_id!r} is unverified: its new version failed the "
            f"acceptance criteria {', '.join(failed) or '(unknown)'}; no certificate is issued",
            "request_id")
    if request.status != RequestStatus.completed.value:
        raise ConflictError(
            f"forget request {request_id!r} is {request.status}: certificates are issued "
            f"for completed requests only", "request_id")
    source = get_version(session, request.model_name, request.source_version)
    assert request.result_version is not None  # a completed request published its version
    result = get_version(session, request.model_name, request.result_version)
    method = get_method(request.method)
    assert method is not None  # checked when the request was filed
    exact = bool(method.exact)
    metrics = request.metrics or {}
    entries = [{**record, "created_at": timestamp_text(record["created_at"])}
               for record in iter_records(session, forget_request_id=request.id)]
    head = chain_head(session)
    body = {
        "format": FORMAT,
        "issued_at": timestamp_text(utcnow()),
        "issuer": {"service": "unlearn-service", "version": __version__},
        "request": {
            "id": request.id, "subject_reference": request.subject_reference,
            "requested_by": request.requested_by, "reason": request.reason,
            "target": {"classes": request.target_classes,
                       "sample_ids": request.target_sample_ids},
            "method": request.method, "params": request.params,
            "created_at": timestamp_text(request.created_at),
            "finished_at": timestamp_text(request.finished_at) if request.finished_at else None,
        },
        "source_version": _version_summary(source),
        "result_version": _version_summary(result),
        "metrics": {"before": _without_confusion_matrices(metrics.get("before")),
                    "after": _without_confusion_matrices(metrics.get("after"))},
        "verification": _verification_summary(request.verification),
        # Issue 10: subjects (hashed), superseded versions and their purge.
        "erasure": erasure_section(session, request, data_controller),
        "audit_entries": entries,
        "audit_chain_head": {"seq": head.seq, "hash": head.hash},
        "guarantees": {
            "exact": exact,
            "statement": (EXACT_STATEMENT if exact else APPROXIMATE_STATEMENT).format(
                method=request.method),
        },
    }
    return normalize_details(body)


def sign_certificate(signer: Signer, body: dict[str, Any]) -> dict[str, Any]:
    signature = signer.sign(canonical_json(body).encode("utf-8"))
    return {
        "certificate": body,
        "signature": {
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(public_key_bytes(signer.public_key)).decode(),
            "public_key_fingerprint_sha256": fingerprint(signer.public_key),
            "value": base64.b64encode(signature).decode(),
        },
    }


def issue_certificate(ctx: ServiceContext, session: Session, request_id: str) -> dict[str, Any]:
    """Sign the certificate, and checkpoint the chain head it names outside the database
    (so the head a certificate vouches for can never silently disappear)."""
    from app.audit.checkpoints import checkpoint_store, write_checkpoint
    from app.audit.chain import ChainHead

    signer = get_signer(ctx)
    body = build_certificate(session, request_id, ctx.settings.data_controller)
    body["signing_key_id"] = fingerprint(signer.public_key)
    head = body["audit_chain_head"]
    write_checkpoint(ctx.db, signer, checkpoint_store(ctx),
                     ChainHead(head["seq"], head["hash"]))
    return sign_certificate(signer, body)


@dataclass
class Check:
    name: str
    ok: bool
    message: str


def verify_certificate(document: dict[str, Any], trusted_public_key: str | None = None
                       ) -> list[Check]:
    """Offline checks of a certificate document; every check is reported, pass or fail."""
    checks: list[Check] = []
    try:
        body = document["certificate"]
        signature = document["signature"]
        embedded = load_public_key(signature["public_key"])
        value = base64.b64decode(signature["value"], validate=True)
    except (KeyError, TypeError, ValueError) as error:
        return [Check("structure", False, f"not a certificate document: {error}")]
    checks.append(Check("structure", body.get("format") == FORMAT,
                        f"format {body.get('format')!r}"))
    if trusted_public_key is not None:
        trusted = load_public_key(trusted_public_key)
        same = public_key_bytes(trusted) == public_key_bytes(embedded)
        checks.append(Check("public key", same,
                            "the certificate names the trusted key" if same else
                            "the certificate was signed by a different key than the trusted one"))
        key = trusted
    else:
        key = embedded
        checks.append(Check("public key", True,
                            f"using the key embedded in the certificate (fingerprint "
                            f"{fingerprint(embedded)}); pass the service's public key to "
                            f"check who signed it"))
    signed = verify_signature(key, value, canonical_json(body).encode("utf-8"))
    checks.append(Check("signature", signed, "valid Ed25519 signature" if signed else
                        "the signature does not match the content (altered or forged)"))
    head = body.get("audit_chain_head") or {}
    for record in body.get("audit_entries", []):
        try:
            ok = entry_hash(record["prev_hash"], record) == record["entry_hash"]
        except (KeyError, TypeError, ValueError):
            ok = False
        if ok and isinstance(head.get("seq"), int) and record.get("seq", 0) > head["seq"]:
            ok = False
        checks.append(Check(f"audit entry seq {record.get('seq')}", ok,
                            f"{record.get('action')}: hash recomputes" if ok else
                            f"{record.get('action')}: hash does not recompute or is past "
                            f"the chain head"))
    result_sha = (body.get("result_version") or {}).get("artifact_sha256")
    completed = [r for r in body.get("audit_entries", [])
                 if r.get("action") == "forget_request.completed"]
    consistent = bool(completed) and all(
        (r.get("details") or {}).get("artifact_sha256") == result_sha for r in completed)
    checks.append(Check("result artifact", consistent,
                        "the completion audit entry records the result's sha256" if consistent
                        else "no completion entry recording the result artifact's sha256"))
    return checks

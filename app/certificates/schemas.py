from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PublicKey(BaseModel):
    algorithm: str
    public_key_pem: str
    public_key_base64: str = Field(description="The raw 32-byte Ed25519 key.")
    fingerprint_sha256: str


class CertificateSignature(BaseModel):
    algorithm: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    public_key_fingerprint_sha256: str
    value: str = Field(description="Ed25519 signature, base64, over the canonical JSON "
                                   "(sorted keys, no whitespace) of `certificate`.")


class ErasureCertificate(BaseModel):
    certificate: dict[str, Any] = Field(description=(
        "format, issued_at, issuer, request (subject reference, target, method, params), "
        "source_version and result_version (with artifact sha256), metrics before/after, "
        "audit_entries (with their chain hashes), audit_chain_head, guarantees."))
    signature: CertificateSignature

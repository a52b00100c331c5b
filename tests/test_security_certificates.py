"""Signed erasure certificates, checked offline; a corrupted model file is never served."""

from __future__ import annotations

import base64
import copy
import json

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.certificates.service import verify_certificate
from app.main import create_app
from tests.conftest import api_key, forget_body


def _failed(checks) -> list[str]:
    return [check.name for check in checks if not check.ok]


def test_certificate_for_a_completed_request_verifies_offline(client, tmp_path, monkeypatch):
    done = client.post("/forget-requests?wait=true", json=forget_body()).json()
    assert done["status"] == "completed"
    response = client.get(f"/forget-requests/{done['id']}/certificate")
    assert response.status_code == 200, response.text
    document = response.json()
    body = document["certificate"]
    assert body["request"]["subject_reference"] == "GDPR-2026-0042"
    assert body["request"]["target"] == {"classes": [2], "sample_ids": []}
    assert body["request"]["method"] == "output_dampening"
    assert body["request"]["params"] == {"alpha": 0.01}
    models = {v["version"]: v for v in client.get("/models").json()["items"]}
    assert body["source_version"]["artifact_sha256"] == models[1]["artifact_sha256"]
    assert body["result_version"]["artifact_sha256"] == models[2]["artifact_sha256"]
    assert body["metrics"]["after"]["forget"]["accuracy"] < 0.1
    assert "confusion_matrix" not in body["metrics"]["before"]["forget"]
    assert [e["action"] for e in body["audit_entries"]] == [
        "forget_request.received", "forget_request.started", "forget_request.completed"]
    assert body["guarantees"]["exact"] is False
    assert "does NOT retrain" in body["guarantees"]["statement"]
    head = body["audit_chain_head"]
    assert head["seq"] >= max(e["seq"] for e in body["audit_entries"])

    public = client.get("/certificates/public-key", headers={"Authorization": ""}).json()
    assert public["algorithm"] == "Ed25519"
    assert public["fingerprint_sha256"] == document["signature"]["public_key_fingerprint_sha256"]
    checks = verify_certificate(document, public["public_key_pem"])
    assert _failed(checks) == [] and len(checks) == 3 + 3 + 1

    # The live chain still holds the head the certificate recorded.
    anchored = client.get("/audit-log/verify",
                          params={"anchor_seq": head["seq"], "anchor_hash": head["hash"]})
    assert anchored.json()["intact"] is True

    # Offline with the CLI: valid; then altered, then signed by another key.
    from typer.testing import CliRunner

    from app.cli import cli

    certificate_file, key_file = tmp_path / "cert.json", tmp_path / "key.json"
    certificate_file.write_text(json.dumps(document))
    key_file.write_text(json.dumps(public))
    runner = CliRunner()
    ok = runner.invoke(cli, ["certificate", "verify", str(certificate_file),
                             "--public-key", str(key_file)])
    assert ok.exit_code == 0 and "certificate VALID" in ok.output, ok.output

    altered = copy.deepcopy(document)
    altered["certificate"]["metrics"]["after"]["forget"]["accuracy"] = 0.0
    certificate_file.write_text(json.dumps(altered))
    bad = runner.invoke(cli, ["certificate", "verify", str(certificate_file)])
    assert bad.exit_code == 1 and "[FAIL] signature" in bad.output

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from app.audit.chain import canonical_json
    from app.core.signing import Signer
    from app.certificates.service import sign_certificate

    forged = sign_certificate(Signer(Ed25519PrivateKey.generate()), altered["certificate"])
    assert _failed(verify_certificate(forged)) == []  # self-consistent on its own key...
    assert _failed(verify_certificate(forged, public["public_key_pem"])) == ["public key",
                                                                             "signature"]
    assert canonical_json(forged["certificate"]) != canonical_json(body)

    # An audit entry inside the certificate that does not hash to its recorded value.
    entries = copy.deepcopy(document)
    entries["certificate"]["audit_entries"][0]["actor"] = "mallory"
    failed = _failed(verify_certificate(entries, public["public_key_pem"]))
    assert "signature" in failed and any(name.startswith("audit entry") for name in failed)


def test_certificates_only_for_completed_requests(client, ctx, monkeypatch):
    from app.unlearning import output_dampening

    monkeypatch.setattr(output_dampening.OutputDampening, "forget",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    failed = client.post("/forget-requests?wait=true", json=forget_body()).json()
    assert failed["status"] == "failed"
    response = client.get(f"/forget-requests/{failed['id']}/certificate")
    assert response.status_code == 409 and response.json()["error"]["field"] == "request_id"
    assert client.get("/forget-requests/nope/certificate").status_code == 404


def test_signing_key_persists_and_its_path_is_configurable(ctx):
    from app.core.signing import load_or_create_signer, public_key_bytes

    path = ctx.settings.signing_key_path
    first = load_or_create_signer(path)
    again = load_or_create_signer(path)
    assert public_key_bytes(first.public_key) == public_key_bytes(again.public_key)
    with TestClient(create_app(ctx)) as client:
        served = client.get("/certificates/public-key").json()["public_key_base64"]
    assert base64.b64decode(served) == public_key_bytes(first.public_key)


def test_corrupted_artifact_is_refused_with_503_and_audited(client, ctx):
    assert client.app.state.worker.warmed_up.wait(60)  # it loads version 1 at start
    with ctx.db.session() as session:
        from app.registry.models import ModelVersion

        version = session.scalar(select(ModelVersion).where(ModelVersion.version == 1))
    path = ctx.store.path(version.artifact_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the weights
    path.write_bytes(bytes(data))
    ctx.models.clear()

    client_key = {"Authorization": f"Bearer {api_key(ctx, 'client')}"}
    response = client.post("/predict", headers=client_key,
                               json={"instances": [[[0.0] * 28] * 28]})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "artifact_integrity" and "sha256" in error["message"]
    # Clients never see where the server keeps its files; the audit entry says.
    assert version.artifact_path not in error["message"]
    assert str(ctx.settings.artifact_dir) not in error["message"]
    path.unlink()  # missing now: the message named the store's directory
    ctx.models.clear()
    for _ in range(3):  # refused again and again: still one audit entry in the window
        again = client.post("/predict", headers=client_key,
                            json={"instances": [[[0.0] * 28] * 28]})
        assert again.status_code == 503
        assert str(ctx.settings.artifact_dir) not in again.json()["error"]["message"]
        assert "/" not in again.json()["error"]["message"]
    entries = client.get("/audit-log",
                             params={"action": "artifact.integrity_failed"}).json()["items"]
    assert len(entries) == 1
    assert entries[0]["actor"] == "test-client" and entries[0]["model_version"] == 1
    assert entries[0]["details"]["expected_sha256"] == version.artifact_sha256
    assert entries[0]["details"]["previous_window_refusals"] == 0
    assert version.artifact_path in entries[0]["details"]["reason"]
    assert client.get("/audit-log/verify").json()["intact"] is True
    # A forget request from the corrupted version fails; no version is published.
    failed = client.post("/forget-requests?wait=true", json=forget_body()).json()
    assert failed["status"] == "failed" and "sha256" in failed["error"]
    assert str(ctx.settings.artifact_dir) not in failed["error"]

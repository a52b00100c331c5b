"""Registry: immutable versions, production pointer, atomic durable artifacts, integrity."""

import os

import pytest
import torch

from app.core.errors import UnavailableError
from app.registry.artifacts import ArtifactIntegrityError, LocalArtifactStore
from app.registry.model_cache import ModelCache
from app.registration import register_model
from app.registry.service import get_version


def test_first_version_is_production_and_promote_moves_the_pointer(client, ctx, trained_state):
    assert client.get("/models/1").json()["is_production"] is True
    register_model(ctx, trained_state, model_card={"architecture": "mnist-cnn-v1"},
                   actor="test")
    versions = client.get("/models").json()["items"]
    assert [(v["version"], v["is_production"]) for v in versions] == [(1, True), (2, False)]

    promoted = client.post("/models/2/promote")
    assert promoted.status_code == 200 and promoted.json()["is_production"] is True
    assert client.get("/models/1").json()["is_production"] is False
    # The default version for requests and predictions follows the pointer.
    zeros = [[[0.0] * 28] * 28]
    assert client.post("/predict", json={"instances": zeros}).json()["model_version"] == 2
    entries = client.get("/audit-log", params={"action": "model.promoted"}).json()["items"]
    assert entries[0]["model_version"] == 2
    assert entries[0]["details"]["previous_production_version"] == 1
    assert client.post("/models/7/promote").status_code == 404


def test_version_listing_paginates(client, ctx, trained_state):
    for _ in range(3):
        register_model(ctx, trained_state, model_card={"architecture": "mnist-cnn-v1"},
                       actor="test")
    page = client.get("/models", params={"limit": 2}).json()
    assert [v["version"] for v in page["items"]] == [1, 2]
    rest = client.get("/models", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [v["version"] for v in rest["items"]] == [3, 4]
    assert rest["next_cursor"] is None
    assert client.get("/models", params={"cursor": "garbage"}).status_code == 422


def test_store_writes_atomically_and_refuses_overwrites(tmp_path, monkeypatch):
    store = LocalArtifactStore(tmp_path)
    sha = store.put("m/a.safetensors", b"payload")
    assert (tmp_path / "m" / "a.safetensors").read_bytes() == b"payload"
    assert store.get("m/a.safetensors", sha) == b"payload"
    with pytest.raises(FileExistsError):
        store.put("m/a.safetensors", b"other")

    # A crash between write and rename leaves no file under the final name and no temp.
    def crash(*args):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.put("m/b.safetensors", b"payload")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a.safetensors"]


def test_store_rejects_keys_outside_its_root(tmp_path):
    with pytest.raises(ValueError):
        LocalArtifactStore(tmp_path).put("../escape.bin", b"x")


def test_tampered_artifact_is_never_served(client, ctx):
    # The worker's warm-up loads (and verifies) version 1 at start: let it finish first,
    # so that the only copy in memory afterwards is one this test loads.
    assert client.app.state.worker.warmed_up.wait(60)
    with ctx.db.session() as session:
        version = get_version(session, ctx.model_name, 1)
    path = ctx.store.path(version.artifact_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ArtifactIntegrityError):
        ctx.store.get(version.artifact_path, version.artifact_sha256)
    fresh_cache = ModelCache(ctx.store, torch.device("cpu"))
    with pytest.raises(UnavailableError):
        fresh_cache.get(version)
    ctx.models.clear()
    response = client.post("/predict", json={"instances": [[[0.0] * 28] * 28]})
    assert response.status_code == 503
    assert "sha256" in response.json()["error"]["message"]


def test_registration_failure_leaves_no_artifact(ctx, trained_state, monkeypatch):
    from app import registration

    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(registration, "insert_version", fail)
    before = sorted(p for p in ctx.store.root.rglob("*") if p.is_file())
    with pytest.raises(RuntimeError):
        register_model(ctx, trained_state, model_card={"architecture": "mnist-cnn-v1"},
                       actor="test")
    assert sorted(p for p in ctx.store.root.rglob("*") if p.is_file()) == before


def test_version_rows_record_lineage_and_metrics(client):
    request = client.post("/forget-requests?wait=true", json={
        "classes": [4, 9], "method": "output_dampening", "params": {"alpha": 0.01},
        "requested_by": "dpo", "subject_reference": "case-7"}).json()
    version = client.get(f"/models/{request['result_version']}").json()
    assert version["forgotten_classes"] == [4, 9]
    assert version["params"] == {"alpha": 0.01}
    assert len(version["artifact_sha256"]) == 64
    metrics = client.get(f"/models/{request['result_version']}/metrics").json()
    test = metrics["test"]
    assert len(test["per_class_accuracy"]) == 10
    assert len(test["confusion_matrix"]) == 10
    base = client.get("/models/1/metrics").json()
    # Dampening pulls a logit toward 0, not toward -inf: with two classes dampened at
    # once, a "4" can still be won by the (also dampened) "9", so the drop is partial.
    for k in (4, 9):
        assert test["per_class_accuracy"][k] < base["test"]["per_class_accuracy"][k] / 2
    assert all(test["per_class_accuracy"][k] > 0.8 for k in range(10) if k not in (4, 9))
    request_metrics = metrics["forget_request_metrics"]
    assert request_metrics["after"]["forget"]["accuracy"] < \
        request_metrics["before"]["forget"]["accuracy"] / 2
    assert base["test"]["accuracy"] > 0.9
    assert base["forget_request_metrics"] is None

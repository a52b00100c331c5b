"""The S3 artifact store for real: moto's standalone S3 server on loopback, started here,
spoken to through fsspec/s3fs exactly as a deployment with UNLEARN_ARTIFACT_URL=s3://...
would. Then a whole forget request whose artifacts live in that bucket."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest

from app.registry.artifacts import ArtifactIntegrityError, sha256_bytes
from app.wiring import make_artifact_store
from app.registry.s3_store import S3ArtifactStore
from tests.conftest import _unavailable, authorized, forget_body, make_ctx, make_settings
from tests.processes import free_port


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as error:
        _unavailable(f"moto[server] and s3fs are needed for the S3 store tests: {error}")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                _unavailable("moto server did not start")
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(10)
    log.close()


@pytest.fixture
def s3_url(s3_endpoint, monkeypatch):
    """A fresh bucket; moto accepts any credentials, s3fs insists on some."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"unlearn-{uuid.uuid4().hex[:8]}"
    store = S3ArtifactStore(f"s3://{bucket}", endpoint_url=s3_endpoint)
    store.fs.mkdir(bucket)
    return f"s3://{bucket}/deploy-a"


def test_s3_store_round_trip_immutability_and_integrity(s3_url, s3_endpoint):
    store = S3ArtifactStore(s3_url, endpoint_url=s3_endpoint)
    payload = b"safetensors bytes" * 1000
    assert store.put("mnist-cnn/a.safetensors", payload) == sha256_bytes(payload)
    assert store.get("mnist-cnn/a.safetensors", sha256_bytes(payload)) == payload
    assert store.keys() == ["mnist-cnn/a.safetensors"]
    with pytest.raises(FileExistsError):
        store.put("mnist-cnn/a.safetensors", b"other")  # versions are immutable
    with pytest.raises(ArtifactIntegrityError, match="refusing"):
        store.get("mnist-cnn/a.safetensors", "0" * 64)
    # Tampered in the bucket behind the service's back: detected on load.
    store.fs.pipe_file(store._path("mnist-cnn/a.safetensors"), b"tampered")
    with pytest.raises(ArtifactIntegrityError):
        store.get("mnist-cnn/a.safetensors", sha256_bytes(payload))
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        store.get("mnist-cnn/none.safetensors", sha256_bytes(payload))
    with pytest.raises(ValueError):
        store.put("../escape", b"x")
    store.delete("mnist-cnn/a.safetensors")
    store.delete("mnist-cnn/a.safetensors")  # idempotent
    assert store.keys() == []


def test_forget_request_with_artifacts_in_s3(tmp_path, database_url, feature_cache_dir,
                                             small_data, trained_state, s3_url, s3_endpoint):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings(tmp_path, database_url, feature_cache_dir, artifact_url=s3_url,
                             s3_endpoint_url=s3_endpoint)
    assert isinstance(make_artifact_store(settings), S3ArtifactStore)
    ctx = make_ctx(settings, small_data, trained_state)
    try:
        with authorized(TestClient(create_app(ctx)), ctx) as client:
            done = client.post("/forget-requests?wait=true", json=forget_body()).json()
            assert done["status"] == "completed", done["error"]
            version = client.get(f"/models/{done['result_version']}").json()
            prediction = client.post("/predict", json={"model_version": version["version"],
                                                       "instances": [[[0.0] * 28] * 28]})
            assert prediction.status_code == 200
        keys = ctx.store.keys()
        assert len(keys) == 2 and version["artifact_path"] in keys
        assert not (tmp_path / "models").exists()  # nothing went to the local directory
    finally:
        ctx.close()

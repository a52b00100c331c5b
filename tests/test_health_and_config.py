"""Probes, configuration errors, and the migration chain on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from app.core.config import ConfigError, load_settings
from app.all_models import metadata
from app.db.migrations import is_ours, migration_status, upgrade


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migrations"] == "at head"


def test_probes_never_take_a_connection_from_the_request_pool(client, ctx, monkeypatch):
    """Issue 15, finding 1: health probes never touch the database pool that requests use.
    With that pool refusing every checkout (as when requests hold all its connections),
    /readyz and the Open Inference Protocol's probes still answer from their own."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def exhausted():
        raise PoolTimeout("QueuePool limit reached: every request connection is held")

    monkeypatch.setattr(ctx.db.engine.pool, "connect", exhausted)
    client.headers.pop("Authorization")  # probes carry no key
    for path, expected in (("/healthz", {"status": "ok"}), ("/v2/health/live", {"live": True}),
                           ("/v2/health/ready", {"ready": True})):
        response = client.get(path)
        assert (response.status_code, response.json()) == (200, expected), path
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["migrations"] == "at head"


def test_readiness_fails_when_migrations_are_behind(tmp_path):
    from fastapi.testclient import TestClient

    from app.wiring import build_context
    from app.main import create_app

    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}",
                             artifact_dir=tmp_path / "m", cache_dir=tmp_path / "c",
                             audit_checkpoint_path=tmp_path / "checkpoints.jsonl",
                             signing_key_path=tmp_path / "key.pem")
    ctx = build_context(settings)
    with TestClient(create_app(ctx, start_worker=False)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migrations"] == "behind"


def test_migrations_build_the_schema_the_models_describe(database_url):
    upgrade(database_url)
    engine = create_engine(database_url)
    current, head = migration_status(engine)
    assert current == head is not None
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"include_name": is_ours}), metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.parametrize("variable, value", [
    ("UNLEARN_DEVICE", "tpu"),
    ("UNLEARN_LOG_LEVEL", "loud"),
    ("UNLEARN_MAX_PREDICT_BATCH", "many"),
    ("UNLEARN_EMBEDDED_WORKER", "perhaps"),
])
def test_config_errors_name_the_variable_and_value(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert variable in str(error.value)
    assert repr(value) in str(error.value)


def test_unavailable_cuda_device_is_a_clear_error():
    import torch

    from app.ml.device import DeviceUnavailableError, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="UNLEARN_DEVICE"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").type == "cuda"


def test_missing_dataset_names_the_directory_and_files(tmp_path):
    from app.ml.data import DataUnavailableError, load_mnist

    with pytest.raises(DataUnavailableError) as error:
        load_mnist(tmp_path, download=False)
    assert str(tmp_path) in str(error.value)
    assert "train-images-idx3-ubyte" in str(error.value)

"""Shared fixtures: real MNIST subsets, a small trained CNN, a migrated database (SQLite,
and PostgreSQL for the tests that ask for both), and an app served through httpx."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.core.config import load_settings
from app.wiring import build_context
from app.db.migrations import upgrade
from app.main import create_app
from app.ml.data import DataUnavailableError, load_mnist
from app.ml.training import TrainingRecipe, train_model
from app.registration import register_model

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("UNLEARN_DATA_DIR", ROOT.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get(
    "UNLEARN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = bool(os.environ.get("CI"))


# The suite's own knobs (where MNIST, PostgreSQL, Chromium and Fashion-MNIST are; how many
# fuzz examples; whether to refresh the docs' screenshots). Every other UNLEARN_* variable
# configures the service, and one left in the shell (UNLEARN_BOOTSTRAP_ADMIN_KEY after the
# scale-out section, say) must not change what the tests see.
TEST_HARNESS_VARIABLES = frozenset({
    "UNLEARN_DATA_DIR", "UNLEARN_TEST_POSTGRES_URL", "UNLEARN_FASHION_MNIST_DIR",
    "UNLEARN_CHROMIUM", "UNLEARN_UPDATE_DOCS_SCREENSHOTS", "UNLEARN_FUZZ_EXAMPLES",
})


@contextlib.contextmanager
def service_environment_cleared(environ=os.environ, keep=TEST_HARNESS_VARIABLES):
    """Remove every UNLEARN_* variable not in ``keep`` for the duration, then put them
    back exactly as they were (save, delete, restore: no monkeypatch, which is per test)."""
    saved = {key: value for key, value in environ.items()
             if key.startswith("UNLEARN_") and key not in keep}
    for key in saved:
        del environ[key]
    try:
        yield saved
    finally:
        for key in [key for key in environ if key.startswith("UNLEARN_") and key not in keep]:
            del environ[key]
        environ.update(saved)


@pytest.fixture(scope="session", autouse=True)
def _clear_service_environment():
    with service_environment_cleared():
        yield


def _unavailable(reason: str):
    # CI must exercise everything: there a missing dependency is a failure, not a skip.
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mnist():
    try:
        return load_mnist(DATA_DIR, download=False)
    except DataUnavailableError as error:
        _unavailable(f"MNIST unavailable: {error}")


@pytest.fixture(scope="session")
def small_data(mnist):
    """6,000 training and 2,000 test images of real MNIST, official IDs kept."""
    return mnist.subset(6000, 2000, seed=0)


@pytest.fixture(scope="session")
def trained_state(small_data):
    """A CNN trained one epoch on the small subset (about 97% test accuracy)."""
    model = train_model(small_data.train_images, small_data.train_labels,
                        TrainingRecipe(seed=0, epochs=1, batch_size=64, learning_rate=2e-3))
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="session")
def feature_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("features-cache")


@contextlib.contextmanager
def fresh_postgres_database(owner: str | None = None,
                            login_roles: tuple[str, ...] = (),
                            drop_roles: tuple[str, ...] = ()) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, as a URL for the test server's admin user;
    dropped afterwards, with ``login_roles`` (created here first, without passwords) and
    ``drop_roles`` (roles the test itself makes). ``owner``: the database's owner, one of
    those roles. Skips, or fails under CI, when PostgreSQL cannot be reached."""
    admin_url = make_url(POSTGRES_URL)
    name = f"unlearn_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for role in login_roles:
                connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            connection.execute(text(f'CREATE DATABASE "{name}"'
                                    + (f' OWNER "{owner}"' if owner else "")))
    except Exception as error:
        engine.dispose()
        _unavailable(f"PostgreSQL unavailable at {admin_url}: {error}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in (*drop_roles, *login_roles):
                connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Every test that uses a database runs twice: on SQLite (a file) and on a fresh
    PostgreSQL database. ``-k sqlite`` / ``-k postgresql`` select one backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'unlearn.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


# The test model (one epoch on 6,000 images, ~94% on class 2) with the tests' usual
# output dampening (alpha 0.01) keeps about 1% of class 2: the service's default class
# criterion (1%) sits right on it, so the test service holds class requests to 5%. The
# verification tests set their own thresholds and check both outcomes.
TEST_ACCEPTANCE = {"acceptance_classes_forget_accuracy_max": 0.05}


def make_settings(tmp_path: Path, database_url: str, feature_cache_dir: Path, **overrides):
    overrides = {**TEST_ACCEPTANCE, **overrides}
    return load_settings(
        database_url=database_url,
        artifact_dir=tmp_path / "models",
        cache_dir=feature_cache_dir,  # shared by the session: features are keyed by backbone
        data_dir=DATA_DIR,
        base_model_path=tmp_path / "none.safetensors",
        signing_key_path=tmp_path / "signing-key.pem",
        dataset_dir=tmp_path / "datasets",
        audit_checkpoint_path=tmp_path / "audit-checkpoints.jsonl",
        # Tests send many wrong keys on purpose from one address (the role matrix alone
        # sends hundreds); tests/test_auth_throttle.py sets the real limits.
        **{"auth_failures_per_address": "100000/minute",
           "auth_failures_per_key_prefix": "100000/minute", **overrides},
    )


def make_ctx(settings, small_data, trained_state):
    upgrade(settings.database_url)
    ctx = build_context(settings, data=small_data)
    register_model(ctx, trained_state, model_card={"architecture": "mnist-cnn-v1",
                                                   "note": "test model"}, actor="test")
    return ctx


@pytest.fixture
def ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    context = make_ctx(make_settings(tmp_path, database_url, feature_cache_dir),
                       small_data, trained_state)
    yield context
    context.close()


def api_key(ctx, *roles: str, name: str | None = None) -> str:
    """Create an API key with ``roles`` (default admin) and return the key itself."""
    from app.auth.service import create_key

    roles = roles or ("admin",)
    with ctx.db.session() as session:
        _, token = create_key(session, name=name or f"test-{'-'.join(roles)}",
                              roles=list(roles), created_by="test-setup")
    return token


def authorized(test_client: TestClient, ctx) -> TestClient:
    """Test clients call as an admin by default (issue 5: every route needs a key)."""
    test_client.headers["Authorization"] = f"Bearer {api_key(ctx, name='test-admin')}"
    return test_client


@pytest.fixture
def client(ctx):
    with authorized(TestClient(create_app(ctx)), ctx) as test_client:
        yield test_client


def forget_body(**overrides) -> dict:
    body = {
        "classes": [2],
        "method": "output_dampening",
        "params": {"alpha": 0.01},
        "requested_by": "privacy.officer@example.com",
        "subject_reference": "GDPR-2026-0042",
        "reason": "erasure request",
    }
    body.update(overrides)
    return body

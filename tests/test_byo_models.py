"""Bring your own model: architectures, models on other datasets, two models side by side,
refused weights, and the 0004 -> 0006 upgrade."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.architectures.base import ArchitectureError, ModelSpec
from app.architectures.catalog import ARCHITECTURES, build_model, check_fits, load_weights
from app.architectures.mnist_cnn import MNIST_SPEC
from app.audit.service import AuditAction, record, verify_chain
from app.core.errors import ConflictError, InvalidInputError
from app.main import create_app
from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, train_model
from app.registration import register_model, register_trained_model
from tests.conftest import _unavailable as unavailable
from tests.conftest import authorized, forget_body

COLOURS = ("red", "green", "blue")


def colour_data(per_class: int = 24, test_per_class: int = 8, side: int = 16,
                seed: int = 0) -> ImageData:
    """A tiny RGB dataset whose class is the dominant colour channel, with string IDs."""
    generator = torch.Generator().manual_seed(seed)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(len(COLOURS)).repeat_interleave(count)
        images = 0.3 * torch.rand(len(labels), 3, side, side, generator=generator)
        images[torch.arange(len(labels)), labels] += 0.6
        return images.clamp(0, 1), labels

    train_images, train_labels = split(per_class)
    test_images, test_labels = split(test_per_class)
    keys = tuple(f"{COLOURS[int(label)]}/img{index:03d}.png"
                 for index, label in enumerate(train_labels))
    return ImageData(train_images=train_images, train_labels=train_labels,
                     train_ids=torch.arange(len(train_labels)), test_images=test_images,
                     test_labels=test_labels, checksum=f"sha256:colours-{seed}",
                     class_names=COLOURS, sample_keys=keys)


@pytest.fixture(scope="module")
def colours():
    return colour_data()


def _resnet_state(data: ImageData) -> dict[str, torch.Tensor]:
    spec = ModelSpec("resnet18", data.num_classes, data.image_shape)
    model = train_model(data.train_images, data.train_labels,
                        TrainingRecipe(seed=0, epochs=3, batch_size=16, learning_rate=2e-3),
                        spec=spec)
    return model.state_dict()


@pytest.fixture(scope="module")
def resnet_state(colours):
    return _resnet_state(colours)


# -- architectures ---------------------------------------------------------------------

@pytest.mark.parametrize("name, shape", [("mnist-cnn", (1, 28, 28)), ("resnet18", (3, 16, 16)),
                                         ("mobilenet-v3-small", (3, 32, 32)),
                                         ("resnet18", (1, 28, 28))])
def test_each_architecture_is_features_then_one_output_layer(name, shape):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, 7, shape)).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (2, model.output_layer.in_features)
        assert torch.allclose(model(x), model.output_layer(features), atol=1e-6)
    assert model(x).shape == (2, 7)
    assert model.output_layer.out_features == 7


def test_resnet18_keeps_torchvision_names_with_a_small_image_stem():
    model = build_model(ModelSpec("resnet18", 10, (3, 32, 32)))
    names = set(model.state_dict())
    assert {"conv1.weight", "layer4.1.bn2.running_var", "fc.weight", "fc.bias"} <= names
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_architectures_refuse_shapes_and_weights_that_do_not_fit():
    with pytest.raises(ArchitectureError, match="28x28"):
        check_fits("mnist-cnn", (3, 32, 32))
    with pytest.raises(ArchitectureError, match="at least 16x16"):
        check_fits("resnet18", (3, 8, 8))
    with pytest.raises(ArchitectureError, match="unknown architecture 'vgg99'"):
        check_fits("vgg99", (3, 32, 32))
    ten_classes = build_model(MNIST_SPEC).state_dict()
    with pytest.raises(ArchitectureError, match="10 classes, the dataset 3"):
        load_weights(ModelSpec("mnist-cnn", 3, (1, 28, 28)), ten_classes)
    with pytest.raises(ArchitectureError, match="missing"):
        load_weights(ModelSpec("resnet18", 10, (1, 28, 28)), ten_classes)
    assert set(ARCHITECTURES) == {"mnist-cnn", "resnet18", "mobilenet-v3-small"}


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_loading_weights_draws_nothing_from_the_seeded_generator(architecture):
    """Loading a version (any thread: predictions, a worker's warm-up) must not move torch's
    process-wide generator, which a worker training from a seed draws from at the same
    time: the loaded network is built without a random initialisation, and answers as a
    network built the usual way and given the same weights."""
    spec = ModelSpec(architecture, 10, (1, 28, 28) if architecture == "mnist-cnn"
                     else (3, 32, 32))
    reference = build_model(spec).eval()
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    loaded = load_weights(spec, reference.state_dict()).eval()
    assert torch.equal(torch.rand(4), expected)
    images = torch.rand(2, *spec.image_shape)
    with torch.inference_mode():
        assert torch.equal(loaded(images), reference(images))
    assert all(p.device.type == "cpu" for p in loaded.parameters())


# -- models on other datasets ----------------------------------------------------------

@pytest.fixture
def two_models(ctx, colours, resnet_state):
    """The default MNIST model (from the ctx fixture) and a ResNet-18 on the colours."""
    ctx.datasets.preload("colours", colours)
    register_model(ctx, resnet_state, model_card={"note": "tiny resnet"}, actor="test",
                   model_name="colours-resnet", dataset_name="colours",
                   architecture="resnet18")
    return ctx


@pytest.fixture
def two_client(two_models):
    with authorized(TestClient(create_app(two_models)), two_models) as test_client:
        yield test_client


def _colour_instance(colour: int) -> list:
    image = torch.full((3, 16, 16), 0.1)
    image[colour] = 0.9
    return image.tolist()


def test_two_models_side_by_side_never_cross(two_client, small_data):
    client = two_client
    models = client.get("/registered-models").json()["items"]
    by_name = {m["name"]: m for m in models}
    assert by_name["mnist-cnn"]["dataset"] == "mnist" and by_name["mnist-cnn"]["is_default"]
    assert by_name["colours-resnet"]["dataset"] == "colours"
    assert by_name["colours-resnet"]["architecture"] == "resnet18"
    assert by_name["colours-resnet"]["class_names"] == list(COLOURS)

    # Forget a class of the ResNet by name; the default model is untouched.
    # This test is about two models side by side, not about how well dampening forgets on
    # a three-step ResNet: its class criterion is relaxed so that the version is promotable.
    response = client.post("/forget-requests?wait=true", json=forget_body(
        model_name="colours-resnet", classes=["green"], params={"alpha": 0.01},
        acceptance={"forget_accuracy_max": 1.0}))
    assert response.status_code == 200, response.text
    request = response.json()
    assert request["status"] == "completed", request["error"]
    assert request["model_name"] == "colours-resnet"
    assert request["classes"] == [1] and request["class_names"] == ["green"]
    assert request["links"]["result_version"] == "/models/2?model=colours-resnet"

    assert [v["version"] for v in client.get("/models").json()["items"]] == [1]
    resnet_versions = client.get("/models?model=colours-resnet").json()["items"]
    assert [(v["version"], v["forgotten_classes"]) for v in resnet_versions] == [(1, []), (2, [1])]
    metrics = client.get("/models/2/metrics?model=colours-resnet").json()
    assert metrics["forgotten_classes"] == [1]
    assert len(metrics["test"]["per_class_accuracy"]) == 3
    assert client.get("/models/2").status_code == 404  # the default model has no version 2
    listed = client.get("/forget-requests?model=mnist-cnn").json()["items"]
    assert listed == []

    # Predictions: each model takes its own images and answers with its own classes.
    default = client.post("/predict", json={"instances": [small_data.test_images[0, 0].tolist()]})
    assert default.status_code == 200 and default.json()["model_name"] == "mnist-cnn"
    assert len(default.json()["predictions"][0]["probabilities"]) == 10
    red = client.post("/predict", json={"model_name": "colours-resnet", "model_version": 1,
                                        "instances": [_colour_instance(0), _colour_instance(1)]})
    assert red.status_code == 200, red.text
    assert red.json()["class_names"] == list(COLOURS)
    assert [p["label"] for p in red.json()["predictions"]] == [0, 1]
    before = client.post("/predict", json={"model_name": "colours-resnet",
                                           "instances": [_colour_instance(1)]}).json()
    assert before["model_version"] == 1  # production stays until promoted
    promoted = client.post("/models/2/promote?model=colours-resnet")
    assert promoted.status_code == 200
    after = client.post("/predict", json={"model_name": "colours-resnet",
                                          "instances": [_colour_instance(1)]}).json()
    assert after["model_version"] == 2
    green_before = before["predictions"][0]["probabilities"][1]
    assert after["predictions"][0]["probabilities"][1] < green_before
    assert client.get("/registered-models/mnist-cnn").json()["production_version"] == 1

    # Images shaped for the other model are refused with the expected shape named.
    wrong = client.post("/predict", json={"model_name": "colours-resnet",
                                          "instances": [small_data.test_images[0, 0].tolist()]})
    assert wrong.status_code == 422 and "(3, 16, 16)" in wrong.json()["error"]["message"]
    unknown = client.post("/predict", json={"model_name": "nope", "instances": [[[0.0]]]})
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]["message"]
    assert client.get("/models?model=nope").status_code == 404

    with two_models_session(client) as session:
        assert verify_chain(session).intact


def two_models_session(client):
    return client.app.state.ctx.db.session()


def test_resnet_forgets_samples_by_the_datasets_own_ids_with_ssd(two_client, colours):
    client = two_client
    keys = [colours.sample_keys[0], colours.sample_keys[1]]
    response = client.post("/forget-requests?wait=true", json=forget_body(
        model_name="colours-resnet", classes=[], sample_ids=keys, method="ssd",
        params={}))
    assert response.status_code == 200, response.text
    body = response.json()
    # No shadow models for this lineage: the per-sample membership evidence is missing, so
    # the request must not pass its criteria (the version is stored for inspection).
    assert body["status"] == "unverified", body["error"]
    assert body["verification"]["passed"] is False
    assert body["sample_ids"] == sorted(keys)
    version = client.get(f"/models/{body['result_version']}?model=colours-resnet").json()
    assert version["forgotten_sample_ids"] == sorted(keys)
    assert version["architecture"] == "resnet18"
    bad = client.post("/forget-requests", json=forget_body(
        model_name="colours-resnet", classes=[], sample_ids=["red/nope.png"], method="ssd",
        params={}))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "sample_ids[0]"
    bad_class = client.post("/forget-requests", json=forget_body(
        model_name="colours-resnet", classes=["purple"]))
    assert bad_class.status_code == 422 and "'purple'" in bad_class.json()["error"]["message"]
    assert "'red'" in bad_class.json()["error"]["message"]


def test_weights_are_refused_when_they_do_not_fit_the_dataset(ctx, colours, resnet_state):
    ctx.datasets.preload("colours", colours)
    mnist_weights = build_model(MNIST_SPEC).state_dict()
    with pytest.raises(InvalidInputError, match="28x28"):
        register_model(ctx, mnist_weights, model_card={}, actor="t", model_name="wrong",
                       dataset_name="colours", architecture="mnist-cnn")
    four_classes = _resnet_state(colour_data(per_class=2))  # 3 classes...
    four_classes["fc.weight"] = torch.zeros(4, 512)
    four_classes["fc.bias"] = torch.zeros(4)
    with pytest.raises(InvalidInputError, match="4 classes, the dataset 3"):
        register_model(ctx, four_classes, model_card={}, actor="t", model_name="wrong",
                       dataset_name="colours", architecture="resnet18")
    with pytest.raises(InvalidInputError, match="trained on other data"):
        register_model(ctx, resnet_state, model_card={"dataset_checksum": "sha256:other"},
                       actor="t", model_name="wrong", dataset_name="colours",
                       architecture="resnet18")
    # An existing model keeps its dataset and architecture.
    with pytest.raises(ConflictError, match="trained on dataset 'mnist'"):
        register_model(ctx, resnet_state, model_card={}, actor="t", dataset_name="colours")
    with pytest.raises(InvalidInputError, match="must be 1-100 characters"):
        register_model(ctx, resnet_state, model_card={}, actor="t", model_name="Bad Name!",
                       dataset_name="colours", architecture="resnet18")
    with ctx.db.session() as session:  # nothing half-registered
        names = {row[0] for row in session.execute(text("SELECT name FROM registered_models"))}
    assert names == {"mnist-cnn"}
    assert not any("wrong" in key for key in ctx.store.keys())


def test_a_new_model_on_mnist_trains_with_its_own_name(ctx, small_data):
    data = small_data.subset(300, 100, seed=2)
    model = train_model(data.train_images, data.train_labels,
                        TrainingRecipe(seed=1, epochs=1, batch_size=32), spec=MNIST_SPEC)
    row = register_trained_model(ctx, model, model_card={}, actor="t", model_name="digits-2",
                                 dataset_name="mnist")
    assert (row.model_name, row.version, row.architecture) == ("digits-2", 1, "mnist-cnn")
    assert row.model_card["dataset"] == "mnist" and row.model_card["num_classes"] == 10
    with ctx.db.session() as session:
        actions = [r[0] for r in session.execute(text(
            "SELECT action FROM audit_log WHERE model_name = 'digits-2' ORDER BY seq"))]
    assert actions == [AuditAction.model_created.value, AuditAction.model_registered.value]


def test_upgrade_from_0004_keeps_every_record_meaning_the_same(database_url):
    from app.db.migrations import upgrade
    from app.db.session import Database

    upgrade(database_url, "0004")
    database = Database(database_url)
    try:
        with database.session() as session:
            record(session, AuditAction.model_registered, "old", model_name="mnist-cnn",
                   model_version=1, details={"x": 1})
        with database.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO registered_models (name, production_version, created_at) "
                "VALUES ('mnist-cnn', 1, '2026-01-01 00:00:00+00:00')"))
            connection.execute(text(
                "INSERT INTO forget_requests (id, model_name, source_version, status, method,"
                " params, target_classes, target_sample_ids, requested_by, subject_reference,"
                " reason, progress, attempts, created_at) VALUES ('r1', 'mnist-cnn', 1, "
                "'completed', 'output_dampening', '{}', '[2]', '[5]', 'a', 'b', '', 1, 1, "
                "'2026-01-01 00:00:00+00:00')"))
        upgrade(database_url)
        with database.engine.connect() as connection:
            model = connection.execute(text(
                "SELECT dataset_name, architecture FROM registered_models")).one()
            request = connection.execute(text(
                "SELECT target_sample_keys, target_class_names FROM forget_requests")).one()
        assert tuple(model) == ("mnist", "mnist-cnn")
        assert tuple(request) == (None, None)  # MNIST's IDs are the integers themselves
        with database.session() as session:
            record(session, AuditAction.version_promoted, "new", model_version=1)
        with database.session() as session:
            result = verify_chain(session)
        assert result.intact and result.entries_checked == 2
    finally:
        database.dispose()


FASHION_DIR = Path(os.environ.get("UNLEARN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


def test_fashion_mnist_end_to_end(client, ctx):
    """Register Fashion-MNIST (Debian's gzipped IDX files), train the mnist-cnn on a subset
    for one short epoch, forget a class by name, predict, verify the chain."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        unavailable(f"Fashion-MNIST is not installed at {FASHION_DIR} "
                    f"(apt-get install dataset-fashion-mnist)")
    registered = client.post("/datasets", json={
        "name": "fashion", "format": "idx", "path": str(FASHION_DIR),
        "classes": FASHION_CLASSES})
    assert registered.status_code == 201, registered.text
    assert registered.json()["class_names"] == FASHION_CLASSES
    full = ctx.datasets.get("fashion")
    assert full.num_train == 60_000
    data = full.subset(3000, 1000, seed=0)
    ctx.datasets.preload("fashion", data)  # metrics on the subset keep the test fast
    model = train_model(data.train_images, data.train_labels,
                        TrainingRecipe(seed=0, epochs=1, batch_size=64), spec=MNIST_SPEC)
    row = register_trained_model(ctx, model, model_card={"dataset_checksum": full.checksum},
                                 actor="test", model_name="fashion-cnn", dataset_name="fashion")
    assert row.metrics["test"]["accuracy"] > 0.6  # one short epoch on 3,000 images
    # The MNIST digits model's card names MNIST's checksum: refused on Fashion-MNIST.
    with pytest.raises(InvalidInputError, match="trained on other data"):
        register_model(ctx, model.state_dict(), model_card={"dataset_checksum": (
            "sha256:1e35582d42a90940c55b956deb61875c020b567ed20e3c5b174f52bf7809ed9b")},
            actor="test", model_name="digits-on-fashion", dataset_name="fashion",
            architecture="mnist-cnn")

    response = client.post("/forget-requests?wait=true", json=forget_body(
        model_name="fashion-cnn", classes=["Sneaker"], params={"alpha": 0.01}))
    assert response.status_code == 200, response.text
    request = response.json()
    assert request["status"] == "completed", request["error"]
    assert request["classes"] == [7] and request["class_names"] == ["Sneaker"]
    after = request["metrics"]["after"]
    assert after["test_forget"]["accuracy"] < request["metrics"]["before"]["test_forget"]["accuracy"]

    sneakers = data.test_images[data.test_labels == 7][:8, 0].tolist()
    answer = client.post("/predict", json={"model_name": "fashion-cnn",
                                           "model_version": request["result_version"],
                                           "instances": sneakers})
    assert answer.status_code == 200, answer.text
    assert answer.json()["class_names"] == FASHION_CLASSES
    assert sum(p["label"] == 7 for p in answer.json()["predictions"]) <= 2
    verified = client.get("/audit-log/verify")
    assert verified.status_code == 200 and verified.json()["intact"]

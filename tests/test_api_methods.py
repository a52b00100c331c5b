"""The added methods through the API: sample-ID forgetting, lineage bookkeeping, SISA
versions end to end, and per-method validation."""

import copy

import pytest
import torch

from app.ml.sisa import SisaRecipe, train_sisa
from app.registration import register_trained_model
from app.unlearning.base import ForgetTarget
from app.unlearning.catalog import METHODS
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import authorized, forget_body, make_ctx, make_settings


def test_sample_id_forgetting_with_ssd_and_lineage(client, small_data):
    ids = small_data.train_ids[:120].tolist()
    body = forget_body(classes=[], sample_ids=ids[:80] + ids[:5], method="ssd",
                       params={"alpha": 10, "lambda": 1, "importance_samples": 1000,
                               "calibrate": False})
    first = client.post("/forget-requests?wait=true", json=body)
    assert first.status_code == 200, first.text
    first = first.json()
    # No shadow bank for this lineage: the per-sample membership criterion has no
    # evidence, says so, and does not pass; the version is stored but unverified.
    assert first["status"] == "unverified", first["error"]
    membership = next(c for c in first["verification"]["criteria"]
                      if c["name"] == "forget_membership_flagged")
    assert membership["available"] is False and membership["passed"] is False
    assert membership["note"].startswith("not available: no shadow models")
    assert first["verification"]["membership"]["available"] is False
    assert first["verification"]["failed"] == ["forget_membership_flagged"]
    assert first["params"]["lambda"] == 1 and first["params"]["alpha"] == 10
    assert first["sample_ids"] == sorted(ids[:80])  # deduplicated
    assert first["already_forgotten_sample_ids"] == []
    after = first["metrics"]["after"]
    assert after["forget"]["count"] == 80
    assert first["metrics"]["before"]["forget"]["count"] == 80
    assert after["test_forget"] is None  # no class targeted
    mia = after["membership_inference"]
    for attack in ("entropy_auc", "loss_auc"):
        low, high = mia[attack]["ci95"]
        assert 0.0 <= low <= mia[attack]["value"] <= high <= 1.0
        assert mia[attack]["forget_count"] == 80
    assert "membership_inference" in first["metrics"]["before"]

    # Overlapping second request from the new version: the overlap is reported, and the
    # cumulative set counts every sample once.
    second = client.post("/forget-requests?wait=true", json=forget_body(
        classes=[], sample_ids=ids[60:120], method="ssd",
        params={"importance_samples": 1000}, model_version=first["result_version"])).json()
    assert second["status"] == "unverified", second["error"]
    calibration = second["verification"]["calibration"]
    assert calibration["calibrated"] is True
    assert calibration["validation"]["membership_test"] == "not available (no shadow bank)"
    assert second["already_forgotten_sample_ids"] == sorted(ids[60:80])
    version = client.get(f"/models/{second['result_version']}").json()
    assert version["forgotten_sample_ids"] == sorted(ids[:120])
    assert version["forgotten_sample_count"] == 120
    audit = client.get("/audit-log", params={"action": "forget_request.received"}).json()
    assert any(e["details"].get("already_forgotten_sample_count") == 20 for e in audit["items"])


@pytest.mark.parametrize("override, field", [
    ({"method": "ssd", "params": {"alpha": 0.5}}, "params.alpha"),
    ({"method": "ssd", "params": {"lambda": 0}}, "params.lambda"),
    ({"method": "ssd", "params": {"importance_samples": 100}}, "params.importance_samples"),
    ({"method": "fisher", "params": {"noise_scale": -1}}, "params.noise_scale"),
    ({"method": "finetune", "params": {"epochs": 0}}, "params.epochs"),
    ({"method": "retrain", "params": {"lr": "fast"}}, "params.lr"),
    ({"method": "sisa", "params": {}}, "method"),  # version 1 is a single CNN
    ({"method": "ssd", "params": {}, "classes": [], "sample_ids": [5, 60000]}, "sample_ids[1]"),
])
def test_bad_method_params_are_422_naming_the_field(client, override, field):
    response = client.post("/forget-requests", json=forget_body(**override))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_methods_catalog_lists_every_method(client):
    methods = {m["name"]: m for m in client.get("/methods").json()["items"]}
    assert set(methods) == {"output_dampening", "ssd", "fisher", "finetune", "retrain", "sisa"}
    assert "lambda" in methods["ssd"]["params_schema"]["properties"]
    assert methods["sisa"]["model_kinds"] == ["sisa"]


@pytest.fixture
def tiny_client(tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    """An app over 600 training / 300 test images: SISA metrics run every shard forward."""
    tiny = small_data.subset(600, 300, seed=4)
    context = make_ctx(make_settings(tmp_path, database_url, feature_cache_dir), tiny,
                       trained_state)
    with authorized(TestClient(create_app(context)), context) as test_client:
        yield test_client, context, tiny
    context.close()


def test_sisa_version_predicts_and_forgets_through_the_api(tiny_client):
    client, ctx, small_data = tiny_client
    recipe = SisaRecipe(shards=2, slices=2, epochs_per_slice=2, batch_size=32, seed=3)
    ensemble = train_sisa(small_data, recipe)
    row = register_trained_model(ctx, ensemble, model_card={"kind": "sisa"}, actor="test",
                                 method="train-sisa", params=recipe.to_dict())
    version = client.get(f"/models/{row.version}").json()
    assert version["kind"] == "sisa"
    assert version["test_accuracy"] > 0.5

    image = small_data.test_images[0, 0].tolist()
    predicted = client.post("/predict", json={"model_version": row.version,
                                              "instances": [image]}).json()
    assert predicted["model_version"] == row.version
    assert abs(sum(predicted["predictions"][0]["probabilities"]) - 1.0) < 1e-4

    forget_ids = ensemble.slices_of(1)[1][:10].tolist()  # all in shard 1, slice 1
    done = client.post("/forget-requests?wait=true", json=forget_body(
        classes=[], sample_ids=forget_ids, method="sisa", params={},
        model_version=row.version)).json()
    # Exact, and still checked: SISA ensembles have no shadow bank, so the per-sample
    # membership criterion has no evidence and the request is not certified.
    assert done["status"] == "unverified", done["error"]
    assert done["verification"]["exact"] is True
    assert done["verification"]["failed"] == ["forget_membership_flagged"]
    assert "kind 'sisa'" in done["verification"]["membership"]["reason"]
    child = client.get(f"/models/{done['result_version']}").json()
    assert child["kind"] == "sisa"
    assert child["model_card"]["forget_report"]["retrained_shards"] == [1]
    assert child["model_card"]["forget_report"]["retrained_from_slice"] == {"1": 1}
    assert done["metrics"]["after"]["forget"]["count"] == 10
    # Other methods refuse a SISA source.
    refused = client.post("/forget-requests", json=forget_body(model_version=row.version))
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "method"


def test_retain_set_leaves_out_what_ancestors_forgot(small_data):
    ids = small_data.train_ids[:10].tolist()
    target = ForgetTarget(classes=(3,), sample_ids=tuple(ids[:2]),
                          prior_classes=(7,), prior_sample_ids=tuple(ids[2:4]))
    forget, retain = target.forget_mask(small_data), target.retain_mask(small_data)
    labels = small_data.train_labels
    assert int(forget.sum()) == int((labels == 3).sum()) + int((labels[:2] != 3).sum())
    assert not (retain & (labels == 7)).any() and not (retain & forget).any()
    assert not retain[:4].any()
    assert int(retain.sum()) == int(((labels != 3) & (labels != 7)).sum()) - int(
        ((labels[:4] != 3) & (labels[:4] != 7)).sum())


def test_retrain_and_finetune_report_progress_and_train_on_the_retain_set(small_data,
                                                                          trained_state):
    from app.architectures.catalog import build_model
    from app.architectures.mnist_cnn import MNIST_SPEC

    tiny = small_data.subset(300, 100, seed=2)
    target = ForgetTarget(classes=(2,))
    for name, params in (("retrain", {"epochs": 1}), ("finetune", {"epochs": 1})):
        method = METHODS[name]
        model = build_model(MNIST_SPEC)
        model.load_state_dict(trained_state)
        original = copy.deepcopy(model.state_dict())
        seen: list[float] = []
        result = method.forget(model, target, method.Params.model_validate(params), tiny,
                               seen.append)
        assert seen and seen[-1] == 1.0 and seen == sorted(seen)
        assert not torch.equal(result.state_dict()["fc2.weight"], original["fc2.weight"])

"""Issue 10: erasure by data subject, footprints, superseded versions, purge, certificates.

The dataset is a 600-image slice of real MNIST to which three subjects are assigned, each
owning samples of overlapping classes (as a manifest's subject_id column would)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app.audit.service import verify_chain
from app.forget_requests.models import ForgetRequest
from app.main import create_app
from app.registry.models import ModelVersion
from app.subjects.purge import PurgeScheduler, purge_superseded
from app.unlearning.base import ForgetTarget
from tests.test_console import CONSOLE_URL, log_in
from tests.conftest import api_key, authorized, forget_body, make_ctx, make_settings

# These tests are about subjects and supersession, not about evidence: the lineages have
# no shadow bank and a tiny fine-tuned model moves its test accuracy by more than a point,
# so sample requests are held to no membership test and a loose retained-accuracy bound
# (tests/test_verification.py covers the criteria themselves).
NO_SHADOWS = {"acceptance_samples_require_membership": False,
              "acceptance_samples_retain_drop_max": 1.0}

# Subject -> classes of the samples it owns: every pair of subjects shares a class.
SUBJECT_CLASSES = {"alice@example.com": (0, 1, 2), "bob@example.com": (1, 2, 3),
                   "carol@example.com": (2, 3, 0)}
ALICE = "alice@example.com"


def with_subjects(data):
    """``data`` with two samples per (subject, class) assigned to the three subjects."""
    labels = data.train_labels.tolist()
    ids = data.train_ids.tolist()
    taken: set[int] = set()
    owner: dict[int, str] = {}
    for subject, classes in SUBJECT_CLASSES.items():
        for label in classes:
            free = [i for i, y in zip(ids, labels) if y == label and i not in taken][:2]
            taken.update(free)
            owner.update({i: subject for i in free})
    keys = tuple(owner.get(i) for i in range(data.train_id_count))
    return dataclasses.replace(data, subject_keys=keys), owner


@pytest.fixture(scope="module")
def people(small_data):
    return with_subjects(small_data.subset(600, 200, seed=4))


def _client(ctx):
    return authorized(TestClient(create_app(ctx)), ctx)


@pytest.fixture
def people_ctx(tmp_path, database_url, feature_cache_dir, people, trained_state):
    data, _ = people
    context = make_ctx(make_settings(tmp_path, database_url, feature_cache_dir,
                                         **NO_SHADOWS), data,
                       trained_state)
    yield context
    context.close()


def subject_body(**overrides):
    body = forget_body(classes=[], subject_ids=[ALICE], method="finetune",
                       params={"epochs": 1})
    body.update(overrides)
    return body


def _owned(owner, subject):
    return sorted(i for i, s in owner.items() if s == subject)


def test_subject_is_forgotten_and_never_stored_in_clear(people_ctx, people, tmp_path,
                                                        database_url):
    data, owner = people
    with _client(people_ctx) as client:
        before = client.get(f"/subjects/{ALICE}/footprint").json()
        assert before["datasets"] == [{"dataset": "mnist", "sample_count": 6,
                                       "available": True}]
        [model] = before["models"]
        assert model["versions_including"] == [1] and model["versions_forgotten"] == []
        assert model["production_includes_subject"] and model["forget_requests"] == []

        done = client.post("/forget-requests?wait=true", json=subject_body()).json()
        assert done["status"] == "completed", done["error"]
        assert done["subject_sample_count"] == 6
        assert done["sample_ids"] == _owned(owner, ALICE)
        assert done["subject_hashes"] == [before["subject_hash"]]
        assert done["production_left_superseded"] == 1 and "still holds" in done["notice"]

        after = client.get(f"/subjects/{ALICE}/footprint").json()
        [model] = after["models"]
        assert model["versions_including"] == [1] and model["versions_forgotten"] == [2]
        assert [r["id"] for r in model["forget_requests"]] == [done["id"]]
        assert model["forget_requests"][0]["named_subject"]
        bob = client.get("/subjects/bob@example.com/footprint").json()["models"][0]
        assert bob["versions_including"] == [1, 2] and bob["forget_requests"] == []

        # The console's lineage view says the same.
        with TestClient(create_app(people_ctx), base_url=CONSOLE_URL,
                            follow_redirects=False) as browser:
            browser.admin_key = api_key(people_ctx, "admin", name="console-admin")
            log_in(browser)
            lineage = browser.get("/console/models").text
            assert 'id="production-superseded"' in lineage
            assert 'class="badge superseded"' in lineage
            assert 'id="version-superseded"' in browser.get("/console/models/1").text
            page = browser.get(f"/console/forget-requests/{done['id']}").text
            assert 'id="production-superseded"' in page

        certificate = client.get(f"/forget-requests/{done['id']}/certificate")
        assert certificate.status_code == 200
        erasure = certificate.json()["certificate"]["erasure"]
        assert erasure["subjects"]["subject_hashes"] == [before["subject_hash"]]
        assert erasure["subjects"]["sample_count"] == 6
        assert [v["version"] for v in erasure["superseded_versions"]] == [1]
        assert certificate.json()["certificate"]["signing_key_id"] == \
            certificate.json()["signature"]["public_key_fingerprint_sha256"]
        export = client.get("/audit-log/export?format=jsonl")
        assert export.status_code == 200
        # The clear identifier is nowhere: certificate, audit export, database.
        for raw in (certificate.content, export.content):
            assert ALICE.encode() not in raw and b"alice" not in raw
        assert before["subject_hash"].encode() in export.content
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        for name in (path, path + "-wal"):  # the write-ahead log holds recent pages
            try:
                raw = open(name, "rb").read()
            except FileNotFoundError:
                continue
            assert b"alice" not in raw, name
    else:
        with people_ctx.db.session() as session:
            dump = json.dumps([list(map(str, row)) for table in
                               ("forget_requests", "audit_log", "model_versions")
                               for row in session.execute(
                                   __import__("sqlalchemy").text(f"select * from {table}"))])
        assert "alice" not in dump


def test_every_training_method_leaves_the_subject_out_of_retained_data(
        tmp_path, feature_cache_dir, people, trained_state, monkeypatch):
    data, owner = people
    alice = set(_owned(owner, ALICE))
    others = {i for i, s in owner.items() if s != ALICE}
    seen: list[torch.Tensor] = []
    original = ForgetTarget.retain_mask

    def spy(self, d):
        mask = original(self, d)
        seen.append(mask)
        return mask

    monkeypatch.setattr(ForgetTarget, "retain_mask", spy)
    context = make_ctx(make_settings(tmp_path, f"sqlite:///{tmp_path / 's.db'}",
                                     feature_cache_dir, **NO_SHADOWS), data, trained_state)
    position = {int(i): p for p, i in enumerate(data.train_ids.tolist())}
    try:
        with _client(context) as client:
            for method, params in (("retrain", {"epochs": 1}), ("finetune", {"epochs": 1}),
                                   ("fisher", {"fisher_samples": 100})):
                seen.clear()
                response = client.post("/forget-requests?wait=true", json=subject_body(
                    method=method, params=params, model_version=1))
                assert response.status_code == 200, response.text
                done = response.json()
                assert done["status"] == "completed", (method, done["error"])
                assert seen, f"{method} never asked for the retained data"
                for mask in seen:
                    assert not any(mask[position[i]] for i in alice), method
                    assert all(mask[position[i]] for i in others), method
            # SISA: no shard of the result was trained on the subject's samples.
            from app.ml.sisa import SisaRecipe, train_sisa
            from app.registration import register_trained_model

            ensemble = train_sisa(data, SisaRecipe(shards=2, slices=2, epochs_per_slice=1,
                                                   batch_size=64, seed=3))
            row = register_trained_model(context, ensemble, model_card={"kind": "sisa"},
                                         actor="test", method="train-sisa", params={})
            done = client.post("/forget-requests?wait=true", json=subject_body(
                method="sisa", params={}, model_version=row.version)).json()
            assert done["status"] == "completed", done["error"]
            with context.db.session() as session:
                child = session.scalar(select(ModelVersion).where(
                    ModelVersion.version == done["result_version"]))
            trained_on = {int(i) for ids in context.models.get(child).shard_ids
                          for i in ids.tolist()}
            assert not trained_on & alice and others <= trained_on
    finally:
        context.close()


def test_superseded_versions_promotion_prediction_purge(people_ctx, people):
    data, _ = people
    image = data.test_images[0, 0].tolist()
    with _client(people_ctx) as client:
        done = client.post("/forget-requests?wait=true", json=subject_body()).json()
        assert done["status"] == "completed", done["error"]
        new = done["result_version"]
        listing = {v["version"]: v for v in client.get("/models").json()["items"]}
        assert listing[1]["status"] == "superseded" and listing[new]["status"] == "current"
        one = client.get("/models/1").json()
        assert one["superseded_by"] == done["id"] and one["use_instead"] == new

        client_key = api_key(people_ctx, "client", name="shop")
        auditor_key = api_key(people_ctx, "auditor", name="auditor-1")
        as_client = {"Authorization": f"Bearer {client_key}"}
        as_auditor = {"Authorization": f"Bearer {auditor_key}"}
        # Production (1) is superseded and was not promoted away: clients are refused.
        refused = client.post("/predict", json={"instances": [image]}, headers=as_client)
        assert refused.status_code == 409
        assert f"use version {new}" in refused.json()["error"]["message"]
        # The KServe v2 routes refuse it through the same check.
        v2_body = {"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                               "data": data.test_images[0].flatten().tolist()}]}
        for path in ("/v2/models/mnist-cnn/infer", "/v2/models/mnist-cnn/versions/1/infer"):
            refused = client.post(path, json=v2_body, headers=as_client)
            assert refused.status_code == 409, (path, refused.text)
            assert refused.json()["error"]["field"] == "model_version"
        promoted = client.post(f"/models/{new}/promote")
        assert promoted.status_code == 200
        back = client.post("/models/1/promote")
        assert back.status_code == 409 and done["id"] in back.json()["error"]["message"]
        ok = client.post("/predict", json={"instances": [image]}, headers=as_client)
        assert ok.status_code == 200 and ok.json()["model_version"] == new
        audited = client.post("/predict", json={"instances": [image], "model_version": 1},
                              headers=as_auditor)
        assert audited.status_code == 200
        entries = client.get("/audit-log",
                             params={"action": "prediction.superseded_version"}).json()["items"]
        assert [e["actor"] for e in entries] == ["auditor-1"]

        purged = purge_superseded(people_ctx, 0, "test")
        assert purged == [("mnist-cnn", 1)]
        with people_ctx.db.session() as session:
            rows = {v.version: v for v in session.scalars(select(ModelVersion))}
        assert not people_ctx.store.exists(rows[1].artifact_path)
        assert people_ctx.store.exists(rows[new].artifact_path)
        gone = client.post("/predict", json={"instances": [image], "model_version": 1},
                           headers=as_auditor)
        assert gone.status_code == 410 and gone.json()["error"]["field"] == "model_version"
        for headers in (as_client, {}):  # a client key, the admin key
            gone = client.post("/v2/models/mnist-cnn/versions/1/infer", json=v2_body,
                               headers=headers)
            assert gone.status_code == 410, gone.text
        assert client.post("/v2/models/mnist-cnn/infer", json=v2_body,
                           headers=as_client).status_code == 200
        assert client.get("/models/1").json()["status"] == "purged"
        assert purge_superseded(people_ctx, 0, "test") == []
        reissued = client.get(f"/forget-requests/{done['id']}/certificate").json()
        assert reissued["certificate"]["erasure"]["superseded_versions"][0]["artifact_purged"]
        with people_ctx.db.session() as session:
            assert verify_chain(session).intact


def test_promote_true_moves_production_off_the_erased_data(people_ctx, monkeypatch):
    with _client(people_ctx) as client:
        done = client.post("/forget-requests?wait=true",
                           json=subject_body(promote=True)).json()
        assert done["status"] == "completed", done["error"]
        assert done["production_left_superseded"] is None and done["notice"] is None
        assert client.get("/models").json()["items"][-1]["is_production"]
        # The scheduled purge (UNLEARN_PURGE_SUPERSEDED_AFTER_DAYS) purges version 1.
        monkeypatch.setattr(people_ctx.settings, "purge_superseded_after_days", 0.0)
        scheduler = PurgeScheduler(people_ctx)
        scheduler.start()
        try:
            deadline = time.monotonic() + 30
            while (client.get("/models/1").json()["status"] != "purged"
                   and time.monotonic() < deadline):
                time.sleep(0.1)
        finally:
            scheduler.stop()
        assert client.get("/models/1").json()["status"] == "purged"
        assert client.get(f"/models/{done['result_version']}").json()["status"] == "current"


@pytest.mark.parametrize("body, status, field, words", [
    ({"subject_ids": ["nobody@example.com"]}, 422, "subject_ids[0]", "no training samples"),
    ({"subject_ids": []}, 422, "subject_ids", "empty"),
    ({"subject_ids": ["x" * 501]}, 422, "subject_ids[0]", ""),
    ({"subject_ids": [ALICE], "method": "output_dampening", "params": {"alpha": 0.01}}, 422,
     "subject_ids", "whole classes"),
])
def test_bad_subject_input(people_ctx, body, status, field, words):
    with _client(people_ctx) as client:
        response = client.post("/forget-requests", json=subject_body(**body))
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["field"] == field and words in error["message"]
        assert "nobody" not in error["message"]
    with people_ctx.db.session() as session:
        assert session.scalar(select(ForgetRequest.id)) is None


def test_too_many_subjects_and_a_dataset_without_subjects(tmp_path, feature_cache_dir,
                                                           small_data, trained_state, people):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'p.db'}", feature_cache_dir,
                             max_subject_ids=2)
    context = make_ctx(settings, people[0], trained_state)
    try:
        with _client(context) as client:
            response = client.post("/forget-requests", json=subject_body(
                subject_ids=list(SUBJECT_CLASSES)))
            assert response.status_code == 422
            assert "UNLEARN_MAX_SUBJECT_IDS" in response.json()["error"]["message"]
    finally:
        context.close()
    plain = make_ctx(make_settings(tmp_path / "plain", f"sqlite:///{tmp_path / 'q.db'}",
                                   feature_cache_dir), small_data, trained_state)
    try:
        with _client(plain) as client:
            response = client.post("/forget-requests", json=subject_body())
            assert response.status_code == 422
            assert "no subject_id column" in response.json()["error"]["message"]
    finally:
        plain.close()


def test_versions_purge_cli(people_ctx, monkeypatch):
    from app.cli import cli

    with _client(people_ctx) as client:
        done = client.post("/forget-requests?wait=true",
                           json=subject_body(promote=True)).json()
        assert done["status"] == "completed"
    settings = people_ctx.settings
    monkeypatch.setenv("UNLEARN_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("UNLEARN_ARTIFACT_DIR", str(settings.artifact_dir))
    monkeypatch.setenv("UNLEARN_DATA_SUBSET", "100,50")
    from app.core.config import get_settings
    get_settings.cache_clear()
    runner = CliRunner()
    kept = runner.invoke(cli, ["versions", "purge", "--superseded-older-than", "30"])
    assert kept.exit_code == 0, kept.output
    assert "0 version(s) purged" in kept.output
    purged = runner.invoke(cli, ["versions", "purge", "--superseded-older-than", "0"])
    assert purged.exit_code == 0, purged.output
    assert "purged version 1 of 'mnist-cnn'" in purged.output
    get_settings.cache_clear()


def test_console_try_it_refuses_superseded_and_purged_versions(people_ctx, people):
    """Issue 10 leftover: the console's Try it answered from any version; it now refuses
    them as /predict does, through the same check (409 superseded to client keys, 410
    purged to everyone)."""
    from tests.test_console import csrf_of

    data, _ = people
    image = data.test_images[0, 0].tolist()
    with _client(people_ctx) as client:
        done = client.post("/forget-requests?wait=true", json=subject_body()).json()
        assert done["status"] == "completed", done["error"]
        new = done["result_version"]
        consoles = {}
        stack = contextlib.ExitStack()
        for role in ("client", "admin"):
            browser = stack.enter_context(TestClient(create_app(people_ctx), base_url=CONSOLE_URL,
                                                     follow_redirects=False))
            browser.admin_key = api_key(people_ctx, role, name=f"console-{role}")
            assert log_in(browser).status_code == 303
            consoles[role] = (browser, csrf_of(browser, "/console/try"))

        def try_it(role, version):
            browser, token = consoles[role]
            return browser.post("/console/try/predict",
                                json={"versions": [version], "instances": [image]},
                                headers={"x-csrf-token": token})

        refused = try_it("client", 1)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["field"] == "versions[0]"
        assert f"use version {new}" in refused.json()["error"]["message"]
        assert try_it("client", new).status_code == 200
        assert try_it("admin", 1).status_code == 200  # a before/after comparison, audited
        entries = client.get("/audit-log",
                             params={"action": "prediction.superseded_version"}).json()["items"]
        assert [e["actor"] for e in entries] == ["console-admin"]

        assert client.post(f"/models/{new}/promote").status_code == 200  # then purgeable
        assert purge_superseded(people_ctx, 0, "test") == [("mnist-cnn", 1)]
        for role in ("client", "admin"):
            gone = try_it(role, 1)
            assert gone.status_code == 410, gone.text
            assert gone.json()["error"]["code"] == "gone"
        stack.close()

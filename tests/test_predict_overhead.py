"""Issue 14: the prediction path's per-request work. After the key check, a prediction
resolves its version and the version's superseded/purged state in one database session;
the state is kept between calls only while a one-statement fingerprint of the rows it is
derived from is unchanged, so a change made elsewhere (another process, straight into the
database) is seen by the very next call."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from app.db.base import utcnow
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.main import create_app
from app.subjects.models import VersionPurge
from tests.conftest import api_key, authorized, make_ctx, make_settings


def _count_sessions(ctx, monkeypatch) -> list[int]:
    opened = [0]
    original = ctx.db.session

    def counting():
        opened[0] += 1
        return original()

    monkeypatch.setattr(ctx.db, "session", counting)
    return opened


def _v2_body(images) -> dict:
    return {"inputs": [{"name": "image", "shape": [len(images), 1, 28, 28],
                        "datatype": "FP32", "data": images.reshape(-1).tolist()}]}


def test_a_prediction_opens_one_session_with_the_key_check(tmp_path, database_url,
                                                           feature_cache_dir, small_data,
                                                           trained_state, monkeypatch):
    # Nothing else opens sessions meanwhile: no embedded worker (on PostgreSQL its
    # stalled-job sweep opens one every few seconds) and no webhook deliverer (it polls
    # every second); either made this count 2 now and then.
    ctx = make_ctx(make_settings(tmp_path, database_url, feature_cache_dir,
                                 webhook_deliverer=False), small_data, trained_state)
    with authorized(TestClient(create_app(ctx, start_worker=False)), ctx) as client:
        images = small_data.test_images[:2, 0].numpy()
        calls = [("/predict", {"instances": images.tolist()}),                # production
                 ("/predict", {"instances": images.tolist(), "model_version": 1}),
                 ("/v2/models/mnist-cnn/infer", _v2_body(images)),
                 ("/v2/models/mnist-cnn/versions/1/infer", _v2_body(images))]
        for path, body in calls:  # warm: the model loaded, the version row kept
            assert client.post(path, json=body).status_code == 200
        opened = _count_sessions(ctx, monkeypatch)
        for path, body in calls:
            opened[0] = 0
            assert client.post(path, json=body).status_code == 200
            # One for the API key, the version, its state and (v2) the model's name.
            assert opened[0] == 1, (path, opened[0])
        # Unknown names are still refused by the v2 route as before, naming the field.
        unknown = client.post("/v2/models/nope/infer", json=_v2_body(images))
        assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "name"
        assert "no model named 'nope'" in unknown.json()["error"]["message"]
    ctx.close()


def test_state_written_elsewhere_is_seen_by_the_next_prediction(ctx, small_data):
    """Rows written straight into the database (as another process's worker writes them,
    with no call into this process) change the answer of the very next call."""
    images = small_data.test_images[:1, 0].numpy().tolist()
    with TestClient(create_app(ctx)) as client:
        client.headers["Authorization"] = f"Bearer {api_key(ctx, 'client')}"
        for _ in range(2):  # the state is computed, then kept
            assert client.post("/predict", json={"instances": images}).status_code == 200
        request_id = str(uuid.uuid4())
        with ctx.db.session() as session:
            session.add(ForgetRequest(
                id=request_id, model_name=ctx.model_name, source_version=1,
                result_version=None, status=RequestStatus.completed.value,
                method="output_dampening", target_classes=[3], target_sample_ids=[],
                requested_by="elsewhere", subject_reference="s-1", finished_at=utcnow()))
        refused = client.post("/predict", json={"instances": images})
        assert refused.status_code == 409, refused.text
        assert request_id in refused.json()["error"]["message"]
        refused = client.post("/v2/models/mnist-cnn/infer",
                              json=_v2_body(small_data.test_images[:1, 0].numpy()))
        assert refused.status_code == 409, refused.text
        with ctx.db.session() as session:
            session.add(VersionPurge(model_name=ctx.model_name, version=1,
                                     artifact_path="elsewhere", superseded_by=request_id,
                                     purged_by="elsewhere"))
        gone = client.post("/predict", json={"instances": images, "model_version": 1})
        assert gone.status_code == 410, gone.text


def test_a_refused_first_call_leaves_the_kept_version_row_usable(ctx, small_data):
    """A version's first call fetches its row in the route's one session and keeps it for
    later calls. When that call is refused in the same session (409 here), the session
    rolls back, which expires what it holds: the kept row must not be among them (it was,
    for a while, and the next call for the version answered 500)."""
    images = small_data.test_images[:1, 0].numpy()
    with ctx.db.session() as session:
        session.add(ForgetRequest(
            id=str(uuid.uuid4()), model_name=ctx.model_name, source_version=1,
            result_version=None, status=RequestStatus.completed.value,
            method="output_dampening", target_classes=[3], target_sample_ids=[],
            requested_by="elsewhere", subject_reference="s-1", finished_at=utcnow()))
    client_key = {"Authorization": f"Bearer {api_key(ctx, 'client')}"}
    admin_key = {"Authorization": f"Bearer {api_key(ctx, 'admin', name='admin-2')}"}
    for path, body in (("/predict", {"instances": images.tolist(), "model_version": 1}),
                       ("/v2/models/mnist-cnn/versions/1/infer", _v2_body(images))):
        with TestClient(create_app(ctx)) as client:  # a fresh app: nothing kept yet
            refused = client.post(path, json=body, headers=client_key)
            assert refused.status_code == 409, refused.text
            # Admins may still ask a superseded version (audited): from the kept row.
            answered = client.post(path, json=body, headers=admin_key)
            assert answered.status_code == 200, answered.text


def test_predict_answer_keeps_its_documented_shape(client, small_data):
    """/predict encodes its answer itself (orjson): the answer still validates as the
    PredictResponse the OpenAPI document names."""
    from app.prediction.schemas import PredictResponse

    response = client.post("/predict", json={
        "instances": small_data.test_images[:3, 0].numpy().tolist()})
    assert response.headers["content-type"] == "application/json"
    answer = PredictResponse.model_validate_json(response.content)
    assert answer.model_version == 1 and len(answer.predictions) == 3
    documented = client.app.openapi()["paths"]["/predict"]["post"]["responses"]["200"]
    assert documented["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictResponse")

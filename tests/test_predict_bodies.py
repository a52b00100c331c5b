"""Issue 15, finding 7: a large prediction body is parsed in a parsing process, so that
other requests are answered while it is parsed; small bodies stay on the event loop."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time

import numpy as np
import orjson
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.errors import InvalidInputError
from app.main import create_app
from app.api.routes import prediction as prediction_routes
from app.prediction.body_parsing import BodyParser, ParseFailure, parse_predict_body
from tests.conftest import api_key, authorized, make_ctx, make_settings
from tests.parse_gate import GATE_WAIT_S, gated_parse

OFFLOAD_BYTES = 64 * 1024  # a 10-image body is larger


@pytest.fixture(scope="module")
def parser():
    body_parser = BodyParser(OFFLOAD_BYTES, processes=1)
    yield body_parser
    body_parser.close()


def test_small_bodies_parse_on_the_loop_large_ones_in_a_parsing_process(parser):
    async def pids():
        return (await parser.run(OFFLOAD_BYTES - 1, os.getpid),
                await parser.run(OFFLOAD_BYTES, os.getpid))

    small, large = asyncio.run(pids())
    assert small == os.getpid()
    assert large != os.getpid()


def test_errors_from_a_parsing_process_keep_their_kind_and_field(parser):
    images = np.zeros((3, 28, 28)).tolist()
    images[2][5][5] = True
    raw = orjson.dumps({"instances": images})
    with pytest.raises(InvalidInputError) as refused:
        asyncio.run(parser.run(OFFLOAD_BYTES, parse_predict_body, raw, True))
    assert refused.value.field == "instances[2]"
    with pytest.raises(ParseFailure) as invalid:
        asyncio.run(parser.run(OFFLOAD_BYTES, parse_predict_body,
                               orjson.dumps({"instances": [], "colour": "red"}), True))
    assert invalid.value.errors[0]["loc"] == ("colour",)
    # A regular batch comes back as one float32 array, a ragged one as its lists.
    _, batch = asyncio.run(parser.run(OFFLOAD_BYTES, parse_predict_body,
                                      orjson.dumps({"instances": np.ones((2, 28, 28)).tolist()}),
                                      True))
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float32
    assert batch.shape == (2, 28, 28)


@pytest.fixture
def offloading_client(tmp_path, feature_cache_dir, small_data, trained_state):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unlearn.db'}",
                             feature_cache_dir, predict_parse_offload_bytes=OFFLOAD_BYTES,
                             predict_parse_processes=1)
    context = make_ctx(settings, small_data, trained_state)
    with authorized(TestClient(create_app(context)), context) as client:
        yield client
    context.close()


def test_large_bodies_answer_as_small_ones_do(offloading_client, small_data):
    images = small_data.test_images[:40, 0].numpy().tolist()
    large = offloading_client.post("/predict", json={"instances": images})
    small = [offloading_client.post("/predict", json={"instances": images[i:i + 4]})
             for i in range(0, 40, 4)]
    assert large.status_code == 200, large.text
    assert [p["label"] for p in large.json()["predictions"]] == \
        [p["label"] for r in small for p in r.json()["predictions"]]
    images[7][3][3] = "0.5"
    refused = offloading_client.post("/predict", json={"instances": images})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "instances[7]"
    images[7][3][3] = 0.5
    unknown = offloading_client.post("/predict", json={"instances": images, "colour": 1})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "colour"
    v2 = offloading_client.post("/v2/models/mnist-cnn/infer", json={"inputs": [{
        "name": "image", "shape": [40, 1, 28, 28], "datatype": "FP32",
        "data": small_data.test_images[:40].flatten().tolist()}]})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][1]["data"] == [p["label"] for p in large.json()["predictions"]]


def test_other_requests_are_answered_while_a_large_body_is_parsed(
        offloading_client, small_data, tmp_path, monkeypatch):
    """The parse waits at a gate that the test opens only after another request was
    answered: with the parse on the event loop (or holding the GIL in a thread) that
    request could not be answered, and the parse would give up waiting."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    monkeypatch.setattr(prediction_routes, "parse_predict_body",
                        functools.partial(gated_parse, str(gate_dir)))
    images = small_data.test_images[:20, 0].numpy().tolist()
    answers = {}
    thread = threading.Thread(target=lambda: answers.update(large=offloading_client.post(
        "/predict", json={"instances": images})))
    thread.start()
    deadline = time.monotonic() + GATE_WAIT_S
    while not (gate_dir / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gate_dir / "started").exists()
    assert offloading_client.get("/healthz").status_code == 200
    assert offloading_client.get("/models").status_code == 200  # key check, database
    (gate_dir / "gate").touch()
    thread.join()
    assert (gate_dir / "outcome").read_text() == "released"
    assert answers["large"].status_code == 200
    assert len(answers["large"].json()["predictions"]) == 20


class _BodyMeter:
    """The app behind it, counting the request-body bytes the app pulls from the server."""

    def __init__(self, app):
        self.app, self.bytes_read = app, 0

    async def __call__(self, scope, receive, send):
        async def metered():
            message = await receive()
            self.bytes_read += len(message.get("body", b""))
            return message

        await self.app(scope, metered, send)


def test_a_large_body_is_not_read_before_the_key_passes(tmp_path, feature_cache_dir,
                                                        small_data, trained_state):
    """A caller with a wrong key gets its 401 for a large prediction body (by its declared
    length, or chunked) without the server reading any of it: it could otherwise make the
    server take in up to UNLEARN_MAX_BODY_BYTES for nothing. A small body is read first and
    the key checked with the version lookup; with a good key either is read and answered."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unlearn.db'}",
                             feature_cache_dir, predict_parse_offload_bytes=OFFLOAD_BYTES,
                             predict_parse_processes=1)
    context = make_ctx(settings, small_data, trained_state)
    meter = _BodyMeter(create_app(context))
    image = small_data.test_images[0, 0].numpy().tolist()
    small = orjson.dumps({"instances": [image]})
    large = orjson.dumps({"instances": [image] * 40})
    pixels = (small_data.test_images[:100] * 255).to(torch.uint8).numpy().tobytes()
    header = orjson.dumps({"inputs": [{"name": "image", "shape": [100, 1, 28, 28],
                                       "datatype": "UINT8",
                                       "parameters": {"binary_data_size": len(pixels)}}]})
    binary = header + pixels
    assert len(small) < OFFLOAD_BYTES <= min(len(large), len(binary))
    v2 = {"content-type": "application/octet-stream",
          "Inference-Header-Content-Length": str(len(header))}
    as_json = {"content-type": "application/json"}
    calls = [("/predict", large, as_json), ("/v2/models/mnist-cnn/infer", binary, v2)]
    wrong = {"Authorization": "Bearer ulk_" + "x" * 43}
    good = {"Authorization": f"Bearer {api_key(context, 'client')}"}
    with TestClient(meter) as client:
        for path, body, headers in calls:
            for content in (body, iter([body])):  # declared length, then chunked
                meter.bytes_read = 0
                answer = client.post(path, content=content, headers={**headers, **wrong})
                assert answer.status_code == 401, answer.text
                assert meter.bytes_read == 0, path
                meter.bytes_read = 0
                answer = client.post(path, content=content, headers={**headers, **good})
                assert answer.status_code == 200, answer.text
                assert meter.bytes_read == len(body)
        meter.bytes_read = 0
        answer = client.post("/predict", content=small, headers={**as_json, **wrong})
        assert answer.status_code == 401 and meter.bytes_read == len(small)
    context.close()


def test_a_key_checked_before_a_large_body_is_not_checked_again(offloading_client,
                                                                small_data, monkeypatch):
    """The early check for a large body is the route's check: the key is looked up once a
    call (one throttle count, one database read), whichever the path."""
    from app.auth import deps as auth_deps

    lookups = []
    real = auth_deps.authenticate_throttled

    def counted(*args, **kwargs):
        lookups.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(auth_deps, "authenticate_throttled", counted)
    image = small_data.test_images[0, 0].numpy().tolist()
    for count in (1, 40):  # a small body, then one over OFFLOAD_BYTES
        lookups.clear()
        answer = offloading_client.post("/predict", json={"instances": [image] * count})
        assert answer.status_code == 200, answer.text
        assert lookups == ["api"], count


def test_predict_checks_the_key_before_it_parses_any_body(offloading_client, small_data):
    """/predict checks the key first thing in its thread hop (small bodies) or before the
    parsing process gets the body (large ones): a missing or wrong key gets 401 and a key
    without the client or auditor role 403, whatever the body holds."""
    from app.auth.service import create_key

    context = offloading_client.app.state.ctx
    with context.db.session() as session:
        _, officer = create_key(session, name="officer", roles=["privacy_officer"],
                                created_by="test")
    image = small_data.test_images[0, 0].numpy().tolist()
    bodies = [orjson.dumps({"instances": [image]}),                       # small, valid
              orjson.dumps({"instances": [image], "model_version": 99}),  # no such version
              b'{"instances": [[1, 2]', b"[]",                            # broken, wrong
              orjson.dumps({"instances": [image] * 40}),                  # large, valid
              b'{"instances": [' + b"9," * OFFLOAD_BYTES]                 # large, broken
    assert len(bodies[4]) >= OFFLOAD_BYTES and len(bodies[5]) >= OFFLOAD_BYTES
    offloading_client.headers.pop("Authorization")
    for headers, status in (({}, 401), ({"Authorization": "Bearer ulk_" + "x" * 43}, 401),
                            ({"Authorization": f"Bearer {officer}"}, 403)):
        answers = [offloading_client.post("/predict", content=body, headers={
            **headers, "content-type": "application/json"}) for body in bodies]
        assert [a.status_code for a in answers] == [status] * len(bodies), \
            [a.text[:100] for a in answers]

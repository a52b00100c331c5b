"""A database that goes away: every route answers 503 with Retry-After in the API's error
shape (liveness stays 200), the service recovers when the database returns, and progress
writes retry instead of aborting the running work. The outage is real: the service talks
to PostgreSQL through a TCP proxy that the test cuts (connections dropped, new ones
refused) and restores."""

from __future__ import annotations

import socket
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.db.retry import retry_transient
from app.forget_requests.models import ForgetRequest
from app.main import create_app
from tests.test_console import CONSOLE_URL, log_in
from tests.conftest import (
    api_key,
    forget_body,
    fresh_postgres_database,
    make_ctx,
    make_settings,
)


class CuttableProxy:
    """Forwards 127.0.0.1:port to the database. ``cut()`` drops every connection and
    closes the port (connects are refused); ``restore()`` listens again."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        try:  # shutdown wakes the thread blocked in accept() and stops listening now
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def outage(tmp_path, feature_cache_dir, small_data, trained_state):
    with fresh_postgres_database() as url:
        real = make_url(url)
        proxy = CuttableProxy((real.host or "127.0.0.1", real.port or 5432))
        via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False)
        ctx = make_ctx(make_settings(tmp_path, via_proxy, feature_cache_dir), small_data,
                       trained_state)
        yield ctx, proxy
        proxy.cut()
        ctx.close()


IMAGE = [[0.5] * 28 for _ in range(28)]


def test_every_route_answers_503_while_the_database_is_away(outage):
    ctx, proxy = outage
    token = api_key(ctx, name="admin")
    admin = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(ctx, start_worker=False), headers=admin, base_url=CONSOLE_URL,
                    follow_redirects=False) as client:
        client.admin_key = token
        assert log_in(client).status_code == 303  # a console session, for its pages
        assert client.post("/predict", json={"instances": [IMAGE]}).status_code == 200
        filed = client.post("/forget-requests", json=forget_body()).json()
        proxy.cut()
        calls = [("POST", "/predict", {"instances": [IMAGE]}),
                 ("GET", "/models", None), ("GET", "/models/1", None),
                 ("GET", f"/forget-requests/{filed['id']}", None),
                 ("GET", "/forget-requests", None),
                 ("POST", "/forget-requests", forget_body()),
                 ("GET", "/audit-log", None), ("GET", "/audit-log/verify", None),
                 ("GET", "/keys", None), ("GET", "/console/models", None)]
        for method, path, body in calls:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["Retry-After"] == "5", path
            assert response.json()["error"]["code"] == "database_unavailable", path
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        proxy.restore()
        assert client.post("/predict", json={"instances": [IMAGE]}).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_progress_writes_survive_a_blip_and_never_abort_the_work(outage):
    from app.forgetting import service
    from app.forgetting.execution import ExecutionProgress, claim_next
    from app.forgetting.schemas import ForgetRequestCreate

    ctx, proxy = outage
    created, _ = service.submit_request(ctx.db, ctx.model_name,
                                        ForgetRequestCreate(**forget_body()), "test", 100,
                                        settings=ctx.settings,
                                        data=ctx.model_data(ctx.model_name))
    assert claim_next(ctx, "w1") == created.id
    progress = ExecutionProgress(ctx, created.id, "w1")

    def progress_of() -> float:
        with ctx.db.session() as session:
            return session.scalar(select(ForgetRequest.progress)
                                  .where(ForgetRequest.id == created.id))

    # A blip: the database is back before the retries run out; the write lands.
    proxy.cut()
    threading.Timer(0.3, proxy.restore).start()
    progress.last_write = 0.0
    progress(0.4)
    assert progress_of() == pytest.approx(0.4)

    # A longer outage: the report is skipped, the work goes on (no exception).
    proxy.cut()
    progress.last_write = 0.0
    progress(0.6)
    proxy.restore()
    progress.last_write = 0.0
    progress(0.7)
    assert progress_of() == pytest.approx(0.7)


def test_retry_transient_retries_only_transient_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
        return "written"

    assert retry_transient(flaky, sleep=lambda _: None) == "written" and len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("a bug, not a blip")

    calls.clear()
    with pytest.raises(ValueError):
        retry_transient(broken, sleep=lambda _: None)
    assert len(calls) == 1

"""The app served by a real uvicorn server on a loopback port, in a thread of the test
process (the context, and so the small MNIST subset, is shared with the test)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from app.main import create_app
from tests.processes import free_port


@contextmanager
def live_server(ctx, start_worker: bool = False):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx, start_worker=start_worker),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def get(url: str, **kwargs) -> httpx.Response:
    return httpx.get(url, timeout=kwargs.pop("timeout", 60), **kwargs)

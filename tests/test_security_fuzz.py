"""Property test over the OpenAPI schema (schemathesis): authenticated as an admin, valid
and invalid inputs for every operation never produce a 5xx, and every response matches
the status codes, content types and body schema the operation declares.

Seeded (hypothesis ``derandomize``) with a fixed budget per operation, so a run is
repeatable and short. Set UNLEARN_FUZZ_EXAMPLES to spend more.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("UNLEARN_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _fuzz(client, mode: GenerationMode, examples: int) -> list[str]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    auth = {"Authorization": client.headers["Authorization"]}
    exercised = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue
        exercised.append(operation.label)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            # Always the admin key: the schema's bearer scheme would otherwise have
            # schemathesis send made-up keys (401 everywhere); tests/test_security_roles.py
            # covers authentication and authorization.
            case.headers = {**(case.headers or {}), **auth}
            headers = case.headers
            response = case.call()
            case.validate_response(response, checks=CHECKS, headers=headers)

        run()
    return exercised


def _has_inputs(operation) -> bool:
    return bool(operation.body) or any(True for _ in operation.iter_parameters())


def test_no_server_errors_and_responses_match_the_schema(client):
    """On SQLite and PostgreSQL (which refuses what SQLite accepts, e.g. NUL characters)."""
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        exercised = _fuzz(client, mode, EXAMPLES)
        assert "POST /forget-requests" in exercised and "POST /predict" in exercised


def _console_schema(app) -> dict:
    """An OpenAPI description of the console's routes (kept out of the public schema)."""
    import copy

    from fastapi.openapi.utils import get_openapi
    from fastapi.routing import APIRoute

    from app.auth.deps import _flatten_routes

    routes = []
    for path, route, _ in _flatten_routes(app.routes):
        if isinstance(route, APIRoute) and path.startswith("/console") \
                and path != "/console/logout":  # would end the fuzzer's session
            visible = copy.copy(route)
            visible.include_in_schema = True
            routes.append(visible)
    return get_openapi(title="console", version="1", routes=routes)


def test_console_routes_never_give_server_errors(ctx):
    """The same property over the console's pages and data calls, logged in as an admin
    (cookie and CSRF header sent with every case)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from tests.conftest import api_key
    from tests.test_console import CONSOLE_URL, csrf_of, log_in

    with TestClient(create_app(ctx), base_url=CONSOLE_URL, follow_redirects=False) as console:
        console.admin_key = api_key(ctx, "admin", name="fuzz-console-admin")
        assert log_in(console).status_code == 303
        cookie = "; ".join(f"{name}={value}" for name, value in console.cookies.items())
        csrf = csrf_of(console)
        schema = schemathesis.openapi.from_dict(_console_schema(console.app))
        schema.app = console.app
        exercised = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for result in schema.get_all_operations():
                operation = result.ok()
                if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                    continue
                exercised.append(operation.label)

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, derandomize=True, database=None,
                          deadline=None, suppress_health_check=list(HealthCheck))
                def run(case):
                    case.headers = {**(case.headers or {}), "Cookie": cookie,
                                    "X-CSRF-Token": csrf}
                    headers = case.headers
                    response = case.call()
                    case.validate_response(response, checks=[not_a_server_error],
                                           headers=headers)

                try:
                    run()
                except Unsatisfiable:  # no invalid value exists (a free-text path segment)
                    assert mode is GenerationMode.NEGATIVE, operation.label
        assert "GET /console/models/{version}" in exercised
        assert "GET /console/forget-requests" in exercised

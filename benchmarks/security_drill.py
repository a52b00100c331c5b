"""The issue-15 attack drill's figures, against a real uvicorn server on SQLite (one API
process with its embedded worker; the drill itself was run on PostgreSQL with two
workers, so absolute latencies differ). Prints each figure with the device and backend.

1. schemathesis cases run over the OpenAPI schema (admin key), and how many were 5xx;
2. the crafted-input corpus (tests/test_crafted_inputs.py) and how many were 5xx;
3. /healthz p99 while 50 ``?wait=true`` calls are held (target < 100 ms);
4. audit tamper cases detected (the point-2 cases of tests/test_audit_checkpoints.py);
5. key guesses per second an attacker gets after the failure limit (verdicts other than
   429 per second: 0 once throttled);
6. small-request p99 while four 15 MB /predict bodies are parsed, with large bodies
   parsed in parsing processes (now) and on the event loop (before), in the same run.

    python benchmarks/security_drill.py [--fuzz-examples 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, admin_headers, fresh_context, percentile, serve  # noqa: E402

BACKEND = "SQLite, one uvicorn process, in-process executor"


def device() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (CPU)"


def fuzz(url: str, headers: dict, examples: int) -> tuple[int, int]:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    cases = errors = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            nonlocal cases, errors
            case.headers = {**(case.headers or {}), **headers}
            response = case.call(base_url=url, timeout=30)
            cases += 1
            errors += response.status_code >= 500

        try:
            run()
        except Exception as error:  # an unsatisfiable strategy: skip the operation
            print(f"  (skipped {operation.label}: {type(error).__name__})")
    return cases, errors


def crafted(url: str, headers: dict) -> tuple[int, int]:
    from tests.test_crafted_inputs import API_CORPUS

    errors = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for method, path, body, _ in API_CORPUS:
            content = None if body is None else json.dumps(body).encode()
            response = client.request(method, path, content=content,
                                      headers={"content-type": "application/json"})
            errors += response.status_code >= 500
    return len(API_CORPUS), errors


def probe_p99(url: str, path: str, duration_s: float, headers: dict | None = None) -> float:
    timings = []
    deadline = time.monotonic() + duration_s
    with httpx.Client(base_url=url, headers=headers or {}, timeout=60) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            time.sleep(0.01)
    return percentile(timings, 99)


def healthz_while_waits_held(workdir: Path) -> float:
    """50 waiting calls on requests that cannot run (no worker), then /healthz."""
    from app.auth.service import create_key

    ctx = fresh_context(workdir / "waits", max_waits_per_key=100)
    keys = []
    with ctx.db.session() as session:
        for index in range(50):
            keys.append(create_key(session, name=f"dpo-{index}", roles=["privacy_officer"],
                                   created_by="drill")[1])
    body = {"classes": [3], "method": "output_dampening", "params": {"alpha": 0.01},
            "requested_by": "drill", "subject_reference": "drill"}
    def hold(url: str, key: str) -> None:
        try:  # answered (or cut) only when the server stops: no worker runs the requests
            httpx.post(f"{url}/forget-requests?wait=true", json=body, timeout=120,
                       headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError:
            pass

    with serve(ctx, start_worker=False) as url:
        threads = [threading.Thread(target=hold, args=(url, key), daemon=True)
                   for key in keys]
        for thread in threads:
            thread.start()
        time.sleep(2.0)  # let every call reach its wait
        p99 = probe_p99(url, "/healthz", 5.0)
    ctx.close()
    return p99


def tamper_cases() -> tuple[int, int]:
    selected = "missing_tail or rewrite or forged_entry_dated or does_not_chain or signature"
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_audit_checkpoints.py", "-k", f"({selected}) and sqlite"],
        cwd=ROOT, capture_output=True, text=True)
    last = ran.stdout.strip().splitlines()[-1]
    passed = int(last.split(" passed")[0].split()[-1]) if " passed" in last else 0
    failed = int(last.split(" failed")[0].split()[-1]) if " failed" in last else 0
    return passed, passed + failed


def guesses_after_limit(url: str, seconds: float = 5.0) -> tuple[float, float]:
    """Wrong keys from one address: verdicts (401) per second before and after the limit."""
    with httpx.Client(base_url=url, timeout=30) as client:
        verdicts = 0
        while True:  # use up the window's failures
            status = client.get("/models", headers={"Authorization": "Bearer guess-x"}
                                ).status_code
            if status == 429:
                break
            verdicts += 1
        count = verdicts_after = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            status = client.get("/models", headers={
                "Authorization": f"Bearer guess-{count}"}).status_code
            count += 1
            verdicts_after += status != 429
    return verdicts_after / seconds, count / seconds


def small_p99_under_big_bodies(workdir: Path, offload: bool, rounds: int) -> tuple[float, float]:
    ctx = fresh_context(workdir / ("offload" if offload else "loop"),
                        predict_parse_processes=2 if offload else 0)
    headers = admin_headers(ctx)
    images = np.random.default_rng(0).random((1000, 28, 28)).tolist()
    big = orjson.dumps({"instances": images})  # about 15 MB
    with serve(ctx, start_worker=False) as url:
        post = lambda: httpx.post(f"{url}/predict", content=big, headers={  # noqa: E731
            **headers, "content-type": "application/json"}, timeout=300)
        assert post().status_code == 200  # warm: the model and the parsing processes
        stop = threading.Event()
        timings: dict[str, list[float]] = {"/healthz": [], "/models?limit=1": []}

        def probe(path: str):
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    client.get(path)
                    timings[path].append((time.perf_counter() - started) * 1000)
                    time.sleep(0.01)

        probes = [threading.Thread(target=probe, args=(p,)) for p in timings]
        for thread in probes:
            thread.start()
        for _ in range(rounds):
            bodies = [threading.Thread(target=post) for _ in range(4)]
            for thread in bodies:
                thread.start()
            for thread in bodies:
                thread.join()
        stop.set()
        for thread in probes:
            thread.join()
    ctx.close()
    print(f"  ({len(big) / 1e6:.1f} MB bodies; {len(timings['/healthz'])} health probes)")
    return percentile(timings["/healthz"], 99), percentile(timings["/models?limit=1"], 99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fuzz-examples", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="unlearn-drill-"))
    print(f"device: {device()}; backend: {BACKEND}")

    ctx = fresh_context(workdir / "main", auth_failures_per_address="20/minute")
    headers = admin_headers(ctx)
    with serve(ctx) as url:
        cases, errors = fuzz(url, headers, args.fuzz_examples)
        print(f"schemathesis: {cases} cases, {errors} 5xx "
              f"({args.fuzz_examples} examples per operation)")
        corpus, corpus_errors = crafted(url, headers)
        print(f"crafted corpus: {corpus} inputs, {corpus_errors} 5xx")
        after, tried = guesses_after_limit(url)
        print(f"guesses after the limit: {after:.1f} verdicts/s "
              f"({tried:.0f} attempts/s answered 429)")
    ctx.close()
    print(f"/healthz p99 with 50 waits held: {healthz_while_waits_held(workdir):.1f} ms")
    detected, listed = tamper_cases()
    print(f"tamper cases detected: {detected}/{listed}")
    for offload in (True, False):
        health, models = small_p99_under_big_bodies(workdir, offload, args.rounds)
        where = "parsing processes" if offload else "event loop (before)"
        print(f"four 15 MB bodies, parsed in {where}: /healthz p99 {health:.0f} ms, "
              f"GET /models p99 {models:.0f} ms")


if __name__ == "__main__":
    main()

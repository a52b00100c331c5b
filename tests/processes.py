"""Real service processes for fault and concurrency tests: `unlearn worker` and `unlearn
serve` started with `python -m app.cli`, configured through UNLEARN_* variables, serving the
same seeded MNIST subset as the `small_data` fixture so that each starts in seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import DATA_DIR, ROOT

SMALL_DATA_SUBSET = "6000,2000,0"  # = mnist.subset(6000, 2000, seed=0), as small_data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(settings, **overrides) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UNLEARN_")}
    env.update({
        "UNLEARN_DATABASE_URL": settings.database_url,
        "UNLEARN_ARTIFACT_DIR": str(settings.artifact_dir),
        "UNLEARN_CACHE_DIR": str(settings.cache_dir),
        "UNLEARN_DATA_DIR": str(DATA_DIR),
        "UNLEARN_DATA_SUBSET": SMALL_DATA_SUBSET,
        "UNLEARN_BASE_MODEL_PATH": str(settings.base_model_path),
        "UNLEARN_SIGNING_KEY_PATH": str(settings.signing_key_path),
        "UNLEARN_AUDIT_CHECKPOINT_PATH": str(settings.audit_checkpoint_path),
        "UNLEARN_DATASET_DIR": str(settings.dataset_dir),
        "UNLEARN_LOG_LEVEL": "info",
        "UNLEARN_ACCEPTANCE_CLASSES_FORGET_ACCURACY_MAX": str(
            settings.acceptance_classes_forget_accuracy_max),
        "OMP_NUM_THREADS": "1",  # several processes share two cores
    })
    env.update({f"UNLEARN_{key.upper()}": str(value) for key, value in overrides.items()})
    return env


class ServiceProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=ROOT,
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGSTOP: the process freezes (no heartbeats, no progress) until ``resume``."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """kill -9: no cleanup, no release, exactly like a crashed machine."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a stopped process cannot act on SIGKILL's exit until resumed
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def start_worker(settings, log_path: Path, queues: str = "heavy,light",
                 **overrides) -> ServiceProcess:
    """`unlearn worker`: a procrastinate worker (PostgreSQL)."""
    return ServiceProcess(["worker", "--queues", queues], service_env(settings, **overrides),
                          log_path)


class ApiProcess(ServiceProcess):
    def __init__(self, settings, log_path: Path, port: int | None = None, **overrides):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--host", "127.0.0.1", "--port", str(self.port)],
                         service_env(settings, **overrides), log_path)

    def wait_ready(self, timeout: float = 240) -> None:  # torch imports on a busy machine
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"API process exited:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"API not ready after {timeout}s:\n{self.log()[-3000:]}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

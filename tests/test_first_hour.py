"""A newcomer's first hour: `unlearn bootstrap`/`worker` outside `make` without MNIST and
without a network end in one line naming the setting and the files, in seconds; the CLI
finds a `../shared/data` copy as the Makefile does."""

from __future__ import annotations

import socket
import time

import pytest

from app.ml.data import RAW_FILES, DataUnavailableError, download_mnist


def _offline(*args, **kwargs):
    raise OSError("Network is unreachable")


def test_download_without_network_fails_fast_in_one_line(tmp_path, monkeypatch):
    import torchvision.datasets  # noqa: F401  (its import time is not the point)

    monkeypatch.setattr(socket, "create_connection", _offline)
    started = time.monotonic()
    with pytest.raises(DataUnavailableError) as raised:
        download_mnist(tmp_path / "data")
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message and "UNLEARN_DATA_DIR" in message
    assert all(name in message for name in RAW_FILES) and "no network" in message


def test_cli_bootstrap_without_mnist_says_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings
    from app.db.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'unlearn.db'}"
    upgrade(url)
    monkeypatch.setattr(socket, "create_connection", _offline)
    monkeypatch.chdir(tmp_path)  # no ../shared/data here
    for key, value in {"DATABASE_URL": url, "DATA_DIR": str(tmp_path / "nodata"),
                       "DATASET_DIR": str(tmp_path / "datasets"),
                       "ARTIFACT_DIR": str(tmp_path / "models")}.items():
        monkeypatch.setenv(f"UNLEARN_{key}", value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["bootstrap"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert result.stderr.startswith("error: MNIST not found: UNLEARN_DATA_DIR")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_cli_finds_shared_data_beside_the_checkout(tmp_path, monkeypatch):
    from app.cli import _find_shared_data

    (tmp_path / "shared" / "data" / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    monkeypatch.delenv("UNLEARN_DATA_DIR", raising=False)
    _find_shared_data()
    import os

    assert os.environ["UNLEARN_DATA_DIR"] == str((tmp_path / "shared" / "data").resolve())
    monkeypatch.setenv("UNLEARN_DATA_DIR", "/explicit")  # an explicit setting wins
    _find_shared_data()
    assert os.environ["UNLEARN_DATA_DIR"] == "/explicit"

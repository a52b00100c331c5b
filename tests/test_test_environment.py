"""The fixtures clear the service's UNLEARN_* variables a user's shell may hold, so that
`make test` is green for a user who exported, say, UNLEARN_BOOTSTRAP_ADMIN_KEY."""

from __future__ import annotations

import os

from tests.conftest import TEST_HARNESS_VARIABLES, service_environment_cleared


def test_no_service_variable_reaches_a_test():
    leaked = [key for key in os.environ
              if key.startswith("UNLEARN_") and key not in TEST_HARNESS_VARIABLES]
    assert leaked == []


def test_clearing_saves_deletes_and_restores():
    environ = {"UNLEARN_BOOTSTRAP_ADMIN_KEY": "ulk_from_the_shell", "UNLEARN_DEVICE": "tpu",
               "UNLEARN_DATA_DIR": "/data", "PATH": "/bin"}
    with service_environment_cleared(environ) as saved:
        assert environ == {"UNLEARN_DATA_DIR": "/data", "PATH": "/bin"}
        assert saved == {"UNLEARN_BOOTSTRAP_ADMIN_KEY": "ulk_from_the_shell",
                         "UNLEARN_DEVICE": "tpu"}
        environ["UNLEARN_LOG_LEVEL"] = "debug"  # set by a test without monkeypatch
    assert environ == {"UNLEARN_BOOTSTRAP_ADMIN_KEY": "ulk_from_the_shell",
                       "UNLEARN_DEVICE": "tpu", "UNLEARN_DATA_DIR": "/data", "PATH": "/bin"}

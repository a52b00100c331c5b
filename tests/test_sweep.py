"""The console's alpha sweep on a version that has no single output layer."""

from types import SimpleNamespace

import pytest
from torch import nn

from app.console.sweep import alpha_sweep
from app.core.errors import InvalidInputError


def test_the_sweep_refuses_a_sisa_ensemble_by_name():
    """A SISA version has no one output layer to rescale: a clear 422-style error naming
    the version, not an AttributeError from deep in the feature cache (found by mypy)."""
    ensemble = nn.ModuleList([nn.Linear(4, 10)])  # not an ImageClassifier, as an ensemble
    ctx = SimpleNamespace(model_data=lambda name: SimpleNamespace(num_classes=10),
                          models=SimpleNamespace(get=lambda version: ensemble))
    version = SimpleNamespace(model_name="mnist", version=3, kind="sisa",
                              backbone_sha256="0" * 64)
    with pytest.raises(InvalidInputError, match="version: 3 is of kind 'sisa'") as raised:
        alpha_sweep(ctx, version, 2, (1.0, 0.01))
    assert raised.value.field == "version"

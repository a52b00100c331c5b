"""Output dampening: exact arithmetic on a hand-set output layer."""

import torch

from app.architectures.catalog import build_model
from app.architectures.mnist_cnn import MNIST_SPEC
from app.unlearning.base import ForgetTarget
from app.unlearning.output_dampening import METHOD, OutputDampeningParams, dampen_output_layer


def _model_with_known_output_layer():
    model = build_model(MNIST_SPEC)
    with torch.no_grad():
        model.fc2.weight.copy_(torch.arange(10 * 128, dtype=torch.float32).view(10, 128) / 100)
        model.fc2.bias.copy_(torch.arange(10, dtype=torch.float32) + 1)
    return model


def test_scales_only_the_rows_of_forgotten_classes():
    model = _model_with_known_output_layer()
    weight_before = model.fc2.weight.clone()
    bias_before = model.fc2.bias.clone()
    conv_before = model.conv1.weight.clone()

    dampen_output_layer(model, (2, 7), 0.25)

    for k in range(10):
        factor = 0.25 if k in (2, 7) else 1.0
        assert torch.equal(model.fc2.weight[k], weight_before[k] * factor)
        assert model.fc2.bias[k].item() == bias_before[k].item() * factor
    assert torch.equal(model.conv1.weight, conv_before)


def test_alpha_one_is_identity_and_exact_values():
    model = _model_with_known_output_layer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    METHOD.forget(model, ForgetTarget(classes=(3,)), OutputDampeningParams(alpha=1.0), None,
                  lambda _: None)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name

    METHOD.forget(model, ForgetTarget(classes=(3,)), OutputDampeningParams(alpha=0.5), None,
                  lambda _: None)
    assert model.fc2.bias[3].item() == 2.0  # (3 + 1) * 0.5
    assert model.fc2.weight[3, 0].item() == (torch.tensor(384.0) / 100 * 0.5).item()


def test_alpha_must_be_in_zero_one():
    import pytest
    from pydantic import ValidationError

    for bad in (0.0, -0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            OutputDampeningParams(alpha=bad)
    with pytest.raises(ValidationError):
        OutputDampeningParams(alpha=0.5, beta=1)  # unknown parameter

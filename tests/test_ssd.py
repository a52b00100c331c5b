"""SSD: exact selection and dampening on hand-set importances, importances by hand, cache."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from app.unlearning.ssd import (
    ImportanceCache,
    SsdParams,
    compute_importances,
    dampen,
    state_fingerprint,
)


def tiny_model() -> nn.Module:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.bias.copy_(torch.tensor([5.0, 6.0]))
    return model


def test_dampen_selects_and_scales_exactly():
    model = tiny_model()
    full = {"weight": torch.tensor([[1.0, 1.0], [0.0, 2.0]]), "bias": torch.tensor([1.0, 0.5])}
    forget = {"weight": torch.tensor([[20.0, 10.0], [0.0, 50.0]]), "bias": torch.tensor([11.0, 100.0])}
    counts = dampen(model, full, forget, alpha=10.0, lam=1.0)
    # weight[0,0]: 20 > 10*1 -> x min(1*1/20, 1) = 0.05; weight[0,1]: 10 > 10 is false -> kept;
    # weight[1,0]: 0 > 0 false -> kept; weight[1,1]: 50 > 20 -> x 2/50 = 0.04.
    assert torch.equal(model.weight, torch.tensor([[1.0 * (1 / 20), 2.0], [3.0, 4.0 * (2 / 50)]]))
    # bias[0]: 11 > 10 -> x 1/11; bias[1]: 100 > 5 -> x 0.5/100.
    assert torch.allclose(model.bias, torch.tensor([5.0 / 11, 6.0 * 0.005]), rtol=0, atol=1e-7)
    assert counts == {"weight": 2, "bias": 2}


def test_lambda_caps_the_factor_at_one():
    model = tiny_model()
    full = {"weight": torch.ones(2, 2), "bias": torch.ones(2)}
    forget = {"weight": torch.full((2, 2), 15.0), "bias": torch.zeros(2)}
    dampen(model, full, forget, alpha=10.0, lam=100.0)  # 100*1/15 > 1 -> factor 1
    assert torch.equal(model.weight, tiny_model().weight)
    dampen(model, full, forget, alpha=10.0, lam=3.0)  # factor 3/15 = 0.2
    assert torch.allclose(model.weight, tiny_model().weight * 0.2)
    assert torch.equal(model.bias, tiny_model().bias)  # [Df] = 0 never selects


def test_importances_are_mean_squared_minibatch_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    images, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    importances = compute_importances(model, images, labels, batch_size=4)
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for start in (0, 4, 8):  # batches of 4, 4 and 2
        model.zero_grad()
        nn.functional.cross_entropy(model(images[start:start + 4]), labels[start:start + 4]).backward()
        for name, p in model.named_parameters():
            expected[name] += p.grad.pow(2) / 3
    for name in expected:
        assert torch.allclose(importances[name], expected[name], atol=1e-7)


def test_importance_cache_roundtrip_on_disk(tmp_path, small_data):
    model = tiny_model()
    params = SsdParams()
    key = ImportanceCache.key(state_fingerprint(model), small_data, params)
    assert key != ImportanceCache.key(state_fingerprint(model), small_data,
                                      SsdParams(importance_samples=20_000))
    cache = ImportanceCache(tmp_path)
    assert cache.get(key) is None
    cache.put(key, {"weight": torch.ones(2, 2)})
    reloaded = ImportanceCache(tmp_path).get(key)  # a new process reads the file
    assert torch.equal(reloaded["weight"], torch.ones(2, 2))


def test_params_validation_and_lambda_alias():
    params = SsdParams.model_validate({"alpha": 5, "lambda": 0.5})
    assert params.lam == 0.5
    assert params.model_dump(by_alias=True)["lambda"] == 0.5
    with pytest.raises(ValidationError):
        SsdParams.model_validate({"alpha": 0.5})  # a threshold below 1 selects everything
    with pytest.raises(ValidationError):
        SsdParams.model_validate({"importance_samples": 5000})

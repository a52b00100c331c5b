"""SSD: exact selection and dampening on hand-set importances, importances by hand, cache."""

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from app.unlearning.base import ForgetTarget
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


def test_importances_are_mean_squared_per_sample_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
    images, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    expected = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(10):  # one image at a time: the paper's empirical Fisher diagonal
        model.zero_grad()
        nn.functional.cross_entropy(model(images[i:i + 1]), labels[i:i + 1]).backward()
        for name, p in model.named_parameters():
            expected[name] += p.grad.pow(2) / 10
    for batch_size in (1, 4, 10):  # the batch size is a speed setting only
        importances = compute_importances(model, images, labels, batch_size=batch_size)
        for name in expected:
            assert torch.allclose(importances[name], expected[name], atol=1e-7), batch_size


def test_forget_importance_is_bounded_by_the_data_share():
    """[D] >= |Df|/|D| [Df] elementwise, so [Df]/[D] <= |D|/|Df| and an alpha at that bound
    selects nothing."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    images, labels = torch.randn(40, 5), torch.randint(0, 3, (40,))
    full = compute_importances(model, images, labels, batch_size=16)
    forget = compute_importances(model, images[:4], labels[:4], batch_size=16)
    for name in full:
        assert (forget[name] <= 10 * full[name] + 1e-7).all()
    assert sum(dampen(copy.deepcopy(model), full, forget, alpha=10.0, lam=1.0).values()) == 0


def test_importance_cache_roundtrip_on_disk(tmp_path, small_data):
    model = tiny_model()
    params = SsdParams()
    key = ImportanceCache.key(state_fingerprint(model), small_data, params, ForgetTarget())
    assert key != ImportanceCache.key(state_fingerprint(model), small_data,
                                      SsdParams(importance_samples=20_000), ForgetTarget())
    # [D] is on what the source still holds: a lineage that forgot something has its own.
    assert key != ImportanceCache.key(state_fingerprint(model), small_data, params,
                                      ForgetTarget(prior_classes=(3,)))
    # The batch size is a speed setting: it does not split the cache.
    assert key == ImportanceCache.key(state_fingerprint(model), small_data,
                                      SsdParams(batch_size=16), ForgetTarget())
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
        SsdParams.model_validate({"importance_samples": 500})
    assert SsdParams().calibrate is True


class SmallCNN(nn.Module):
    """A CNN small enough for per-sample gradients over thousands of images in a test."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


class TestSplitIsOffLimits:
    """Stands in for the test images: any use by the calibration fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"calibration read the test split ({name})")

    def __getitem__(self, item):
        raise AssertionError("calibration read the test split")

    def __len__(self):
        raise AssertionError("calibration read the test split")


@pytest.fixture
def one_thread():
    """Small models: one thread is faster on a busy machine and keeps runs identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_calibrated_ssd_forgets_a_class_without_reading_the_test_split(small_data, mnist,
                                                                         one_thread):
    from app.ml.data import ImageData
    from app.ml.training import TrainingRecipe, train_model
    from app.unlearning.ssd import METHOD
    from app.verification.calibration import ValidationCheck

    train = small_data.subset(3000, 10, seed=1)
    torch.manual_seed(0)  # the initial weights
    model = train_model(train.train_images, train.train_labels,
                        TrainingRecipe(seed=0, epochs=2, batch_size=64, learning_rate=3e-3),
                        model=SmallCNN())
    blind = ImageData(train_images=train.train_images, train_labels=train.train_labels,
                      train_ids=train.train_ids, test_images=TestSplitIsOffLimits(),
                      test_labels=TestSplitIsOffLimits(), checksum=train.checksum)
    target = ForgetTarget(classes=(2,))
    acceptance = {"forget_accuracy_max": 0.01, "retain_drop_max": 0.01}  # the defaults
    source = copy.deepcopy(model)
    check = ValidationCheck(source, blind, target, acceptance, shadows=None)
    cache, METHOD.cache = METHOD.cache, None
    try:
        forgotten = METHOD.forget(model, target, SsdParams(batch_size=256), blind,
                                  lambda f: None, check=check)
    finally:
        METHOD.cache = cache
    report = forgotten.forget_report["ssd"]
    # Which images the calibration read: only held training images, never a test index.
    read = check.validation_positions
    assert read.max() < train.num_train and len(read) <= 3000
    assert report["validation"]["split"].startswith("training images")
    assert report["chosen"] is not None
    evaluated = [c for c in report["candidates"] if c.get("evaluated")]
    assert evaluated and evaluated[-1]["passed"], report  # the first that passed is kept
    assert all(not c["passed"] for c in evaluated[:-1])
    changes = [c["relative_change"] for c in evaluated]
    assert changes == sorted(changes)  # least change first
    bound = train.num_train / int((train.train_labels == 2).sum())
    assert report["selection_bound"] == pytest.approx(bound, abs=1e-3)
    for candidate in report["candidates"]:  # alpha >= |D|/|Df| would select nothing
        assert ("skipped" in candidate) == (candidate["alpha"] >= bound)

    # Judged afterwards on the real test split (all 10,000 MNIST test images), by the
    # default criteria.
    from app.ml.training import accuracy

    test_two = mnist.test_labels == 2
    forgotten_accuracy = accuracy(forgotten, mnist.test_images[test_two],
                                  mnist.test_labels[test_two])
    drop = (accuracy(source, mnist.test_images[~test_two], mnist.test_labels[~test_two])
            - accuracy(forgotten, mnist.test_images[~test_two], mnist.test_labels[~test_two]))
    assert forgotten_accuracy <= 0.01, report
    assert drop <= 0.01, report

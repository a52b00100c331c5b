"""The per-sample membership test (offline LiRA, global variance) on a case where
membership is obvious, its reproducibility, the shadow-bank command and its resumption."""

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, train_model
from app.verification.lira import (
    ShadowStatistics,
    allowed_flagged,
    flag_threshold,
    logit_confidence_from_loss,
    model_figures,
    per_image_loss,
    train_shadows,
    z_scores,
)

# Random images with random labels: a model can only get a label right by memorising it.
MEMORISE = TrainingRecipe(seed=0, epochs=150, batch_size=16, learning_rate=1e-2)


def random_label_data(seed: int = 0) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    return ImageData(
        train_images=torch.rand(64, 1, 6, 6, generator=generator),
        train_labels=torch.randint(0, 10, (64,), generator=generator),
        train_ids=torch.arange(64),
        test_images=torch.rand(64, 1, 6, 6, generator=generator),
        test_labels=torch.randint(0, 10, (64,), generator=generator),
        checksum="synthetic-random-labels",
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 128), nn.ReLU(), nn.Linear(128, 10))


def test_logit_confidence_is_log_odds_of_the_true_label():
    p = np.array([1e-9, 0.1, 0.5, 0.9, 1 - 1e-12])
    assert np.allclose(logit_confidence_from_loss(-np.log(p)), np.log(p / (1 - p)), rtol=1e-6)


def test_allowed_flagged_is_the_binomial_quantile():
    assert allowed_flagged(0, 0.01, 0.05) == 0
    assert allowed_flagged(600, 0.01, 0.05) == 10  # P(Binom(600, .01) >= 11) < 5%
    assert allowed_flagged(10, 0.01, 0.05) == 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread avoids the thread pool's overhead on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memorised_bank(tmp_path_factory, one_thread):
    data = random_label_data()
    directory = tmp_path_factory.mktemp("bank")
    paths = train_shadows(directory, data, mlp, MEMORISE, count=16, bank_seed=7)
    return data, directory, paths


def test_lira_flags_a_memorised_sample_and_not_an_unseen_one(memorised_bank):
    data, _, paths = memorised_bank
    statistics = ShadowStatistics.from_files(paths, data)
    # The target memorises the first half of the training split and never sees the rest.
    members = np.arange(32)
    target = train_model(data.train_images[:32], data.train_labels[:32],
                         TrainingRecipe(**{**MEMORISE.to_dict(), "seed": 99}), model=mlp())
    assert (target(data.train_images[:32]).argmax(1) == data.train_labels[:32]).all()
    train_loss = per_image_loss(target, data.train_images, data.train_labels)
    test_loss = per_image_loss(target, data.test_images, data.test_labels)
    z = z_scores(statistics, logit_confidence_from_loss(train_loss), np.arange(64))
    threshold = flag_threshold(0.01)
    # Memorised: flagged (a few memorised samples whose OUT shadows happen to guess their
    # label stay below the threshold); never seen by the target: not flagged.
    assert (z[members] > threshold).mean() >= 0.75
    assert (z[32:] > threshold).mean() <= 0.1
    figures = model_figures(statistics, train_loss, test_loss, members, np.arange(32, 64),
                            np.ones(64, dtype=bool), 0.01)
    assert figures["forget"]["flagged_fraction"] >= 0.75
    assert figures["forget"]["auc"] > 0.95
    assert figures["retained_control"]["flagged_fraction"] <= 0.1
    assert figures["test_flagged_fraction"] <= 0.1


def test_shadow_bank_is_reproducible_with_its_seed(memorised_bank, tmp_path):
    data, _, paths = memorised_bank
    again = train_shadows(tmp_path / "again", data, mlp, MEMORISE, count=16, bank_seed=7)
    first = ShadowStatistics.from_files(paths, data)
    second = ShadowStatistics.from_files(again, data)
    assert np.array_equal(first.train_out_mean, second.train_out_mean, equal_nan=True)
    assert np.array_equal(first.train_out_count, second.train_out_count)
    assert first.sigma == second.sigma
    other = train_shadows(tmp_path / "other", data, mlp, MEMORISE, count=2, bank_seed=8)
    assert not np.array_equal(ShadowStatistics.from_files(other, data).train_out_count,
                              ShadowStatistics.from_files(paths[:2], data).train_out_count)


def test_shadows_train_command_on_a_subset_and_its_resumption(ctx, monkeypatch, tmp_path):
    if not ctx.settings.database_url.startswith("sqlite"):
        pytest.skip("the command is backend-agnostic; one backend is enough")
    from app.cli import cli
    from app.verification.lira import bank_directory

    settings = ctx.settings
    for name, value in {
        "DATABASE_URL": settings.database_url, "ARTIFACT_DIR": str(settings.artifact_dir),
        "CACHE_DIR": str(tmp_path / "cache"), "DATA_DIR": str(settings.data_dir),
        "DATA_SUBSET": "400,100,0", "SIGNING_KEY_PATH": str(settings.signing_key_path),
        "BASE_MODEL_PATH": str(settings.base_model_path),
    }.items():
        monkeypatch.setenv(f"UNLEARN_{name}", value)
    runner = CliRunner()
    first = runner.invoke(cli, ["shadows", "train", "--count", "2", "--epochs", "1"])
    assert first.exit_code == 0, first.output
    assert "shadow 2/2: trained" in first.output
    from app.ml.data import load_mnist

    data = load_mnist(settings.data_dir, download=False).subset(400, 100, 0)
    directory = bank_directory(tmp_path / "cache" / "shadows", settings.model_name, 1, data)
    done = {path.name: path.read_bytes() for path in directory.glob("shadow-*.safetensors")}
    assert sorted(done) == ["shadow-000.safetensors", "shadow-001.safetensors"]
    # An interrupted write leaves only a temporary file; the rerun trains what is missing
    # and leaves the finished shadows untouched.
    (directory / ".tmp-shadow-002.safetensors").write_bytes(b"half-written")
    resumed = runner.invoke(cli, ["shadows", "train", "--count", "3", "--epochs", "1"])
    assert resumed.exit_code == 0, resumed.output
    assert "shadow 1/3: present" in resumed.output and "shadow 3/3: trained" in resumed.output
    for name, content in done.items():
        assert (directory / name).read_bytes() == content
    statistics = ShadowStatistics.from_files(sorted(directory.glob("shadow-*.safetensors")),
                                             data)
    assert statistics.count == 3 and np.isfinite(statistics.sigma)
    assert statistics.train_out_count.max() <= 3

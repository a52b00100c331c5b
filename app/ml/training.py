"""Training loop for any hosted network; the same recipe trains base models and the
`retrain` baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm import tqdm

from app.architectures.base import ImageClassifier, ModelSpec
from app.architectures.catalog import build_model
from app.architectures.mnist_cnn import MNIST_SPEC
from app.ml.device import resident, to_device


@dataclass(frozen=True)
class TrainingRecipe:
    seed: int = 0
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    # Linear decay of the learning rate to zero over the run: a steadier finish than a
    # constant rate for the same two epochs.
    schedule: str = "linear-decay"

    def to_dict(self) -> dict:
        return asdict(self)


ProgressCallback = Callable[[float], None]


def train_model(
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe,
    *,
    device: torch.device = torch.device("cpu"),
    progress: ProgressCallback | None = None,
    show_bar: bool = False,
    model: ImageClassifier | None = None,
    spec: ModelSpec = MNIST_SPEC,
) -> ImageClassifier:
    """Train ``model`` on the given images with the recipe; when ``model`` is None, a fresh
    network of ``spec`` seeded by the recipe (so a retrain is reproducible)."""
    torch.manual_seed(recipe.seed)
    if model is None:
        model = build_model(spec)
    model = model.to(device)
    # On a GPU the whole training set moves once and minibatches are gathered there: a
    # host-side gather and copy per step would leave the card waiting on the CPU.
    images, labels = resident(images, device), resident(labels, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(recipe.seed)
    n = int(labels.shape[0])
    steps_per_epoch = max(1, (n + recipe.batch_size - 1) // recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        (lambda step: 1.0 - step / total_steps) if recipe.schedule == "linear-decay" else (lambda step: 1.0),
    )
    # A phase-aware callback (the executor's) hears "training epoch e/E" and the fraction
    # of that epoch; a plain one the fraction of the whole run.
    phase = getattr(progress, "phase", None)
    bar = tqdm(total=total_steps, desc="training", unit="batch", disable=not show_bar)
    step = 0
    model.train()
    for epoch in range(recipe.epochs):
        # The order is drawn on the CPU with the seeded generator: the same on every device.
        order = torch.randperm(n, generator=generator).to(images.device)
        if phase is not None:
            phase(f"training epoch {epoch + 1}/{recipe.epochs}")
        for start in range(0, n, recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            x = to_device(images[batch], device)
            y = to_device(labels[batch], device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                if progress is not None:
                    progress(step / total_steps if phase is None
                             else (step - epoch * steps_per_epoch) / steps_per_epoch)
    bar.close()
    if progress is not None:
        progress(1.0)
    model.eval()
    return model.cpu()


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             device: torch.device = torch.device("cpu"), batch_size: int = 2048) -> float:
    model = model.to(device).eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(labels), batch_size):
        logits = model(to_device(images[start : start + batch_size], device))
        y = to_device(labels[start : start + batch_size], device)
        correct += (logits.argmax(1) == y).sum()  # summed on the device: one sync at the end
    return int(correct) / max(1, len(labels))

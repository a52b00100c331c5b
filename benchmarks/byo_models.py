"""Bring-your-own model on Fashion-MNIST: mnist-cnn and resnet18, trained by the service,
then a class forget request (output dampening, SSD, retrain) end to end through the API.

For each architecture: training time per epoch and test accuracy, then class forget
requests through uvicorn (``?wait=true``: each returns once the new version is published
with before/after metrics): output dampening with features cached (median of several),
SSD with [D] computed in the request (cold) and cached from an earlier request (warm), and
retrain with the model's own training recipe; each time's ratio to retrain. Every figure
names the device it ran on (UNLEARN_DEVICE).

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/byo_models.py
    # CPU-sized run of the ResNet: --resnet-subset 5000,1000 (the default on CPU)
    UNLEARN_DEVICE=cuda .venv/bin/python benchmarks/byo_models.py --resnet-subset full

Fashion-MNIST: Debian's dataset-fashion-mnist (IDX files under
/usr/share/datasets/fashion-mnist) or UNLEARN_FASHION_MNIST_DIR.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch
from _common import DATA_DIR, ROOT, admin_headers, serve, write_result

from app.architectures.base import ModelSpec
from app.core.config import load_settings
from app.wiring import build_context
from app.datasets.service import register_dataset
from app.db.migrations import upgrade
from app.ml.training import TrainingRecipe, accuracy, train_model
from app.registration import register_trained_model

FASHION_DIR = Path(os.environ.get("UNLEARN_FASHION_MNIST_DIR",
                                  "/usr/share/datasets/fashion-mnist"))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return f"CPU ({os.cpu_count()} cores visible)"


def run_architecture(workdir: Path, arch: str, subset: tuple[int, int] | None,
                     epochs: int, dampening_requests: int) -> dict:
    settings = load_settings(
        database_url=f"sqlite:///{workdir / arch / 'bench.db'}",
        artifact_dir=workdir / arch / "models", data_dir=DATA_DIR,
        cache_dir=workdir / arch / "cache", dataset_dir=workdir / "datasets",
        signing_key_path=workdir / arch / "signing-key.pem",
        model_name=f"fashion-{arch}")
    upgrade(settings.database_url)
    ctx = build_context(settings)
    register_dataset(ctx.db, settings.dataset_dir, name="fashion", format="idx",
                     path=str(FASHION_DIR), classes=CLASSES, actor="benchmark")
    data = ctx.datasets.get("fashion")
    if subset is not None:
        data = data.subset(*subset, seed=0)
        ctx.datasets.preload("fashion", data)
    spec = ModelSpec(arch, data.num_classes, data.image_shape)
    recipe = TrainingRecipe(seed=0, epochs=epochs, batch_size=128 if arch == "resnet18" else 64)
    started = time.perf_counter()
    model = train_model(data.train_images, data.train_labels, recipe, device=ctx.device,
                        spec=spec)
    train_s = time.perf_counter() - started
    test_accuracy = accuracy(model, data.test_images, data.test_labels, ctx.device)
    register_trained_model(ctx, model, model_card={"training_recipe": recipe.to_dict()},
                           actor="benchmark", dataset_name="fashion")

    headers = admin_headers(ctx)
    body = {"classes": ["Sneaker"], "requested_by": "benchmark", "subject_reference": "BENCH"}
    timings: dict[str, float] = {}
    with serve(ctx) as url, httpx.Client(base_url=url, timeout=3600, headers=headers) as client:
        def forget(method: str, params: dict, classes: list) -> float:
            start = time.perf_counter()
            response = client.post("/forget-requests?wait=true", json=body | {
                "method": method, "params": params, "classes": classes,
                "model_version": 1})
            elapsed = time.perf_counter() - start
            result = response.json()
            assert result.get("status") in ("completed", "unverified"), result
            return elapsed

        forget("output_dampening", {"alpha": 0.01}, ["Sneaker"])  # caches the features
        timings["output_dampening"] = statistics.median(
            forget("output_dampening", {"alpha": 0.01}, [CLASSES[i % 10]])
            for i in range(dampening_requests))
        timings["ssd_cold"] = forget("ssd", {}, ["Sneaker"])  # computes and caches [D]
        timings["ssd_warm"] = forget("ssd", {}, ["Bag"])  # [D] of version 1 from the cache
        timings["retrain"] = forget("retrain", {"epochs": epochs,
                                                "batch_size": recipe.batch_size}, ["Sneaker"])
    ctx.close()
    return {"arch": arch, "train": data.num_train, "test": len(data.test_labels),
            "epoch_s": train_s / epochs, "epochs": epochs, "accuracy": test_accuracy,
            **timings}


def parse_subset(text: str, device: torch.device) -> tuple[int, int] | None:
    if text == "full":
        return None
    if text == "auto":
        return None if device.type == "cuda" else (5000, 1000)
    train, test = (int(part) for part in text.split(","))
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resnet-subset", default="auto",
                        help="'TRAIN,TEST', 'full', or 'auto' (full on CUDA, 5000,1000 on CPU)")
    parser.add_argument("--cnn-subset", default="full")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--archs", default="mnist-cnn,resnet18")
    args = parser.parse_args()
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists() and not (
            FASHION_DIR / "train-images-idx3-ubyte").exists():
        raise SystemExit(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install "
                         f"dataset-fashion-mnist, or set UNLEARN_FASHION_MNIST_DIR")
    device = torch.device(os.environ.get("UNLEARN_DEVICE", "cpu"))
    workdir = Path(tempfile.mkdtemp(prefix="unlearn-byo-", dir=ROOT / "var"
                                    if (ROOT / "var").exists() else None))
    rows = []
    for arch in args.archs.split(","):
        subset = parse_subset(args.resnet_subset if arch == "resnet18" else args.cnn_subset,
                              device)
        rows.append(run_architecture(workdir, arch, subset, args.epochs, args.requests))
        print(rows[-1], flush=True)
    lines = [f"Fashion-MNIST, bring-your-own models, device: {device_name(device)}",
             "",
             "| architecture | train / test images | s per epoch | test acc. | output dampening "
             "(median) | SSD, [D] computed | SSD, [D] cached | retrain "
             f"({args.epochs} epochs) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        retrain = row["retrain"]

        def cell(seconds: float) -> str:
            shown = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
            ratio = retrain / seconds
            return f"{shown} ({ratio:.0f}x faster)" if ratio >= 1 else f"{shown} ({ratio:.2f}x)"

        lines.append(
            f"| {row['arch']} | {row['train']} / {row['test']} | {row['epoch_s']:.1f} | "
            f"{row['accuracy']:.3f} | {cell(row['output_dampening'])} | {cell(row['ssd_cold'])} "
            f"| {cell(row['ssd_warm'])} | {retrain:.1f} s |")
    report = "\n".join(lines)
    print(report)
    tag = "cuda" if device.type == "cuda" else "cpu"
    write_result(f"byo_models_{tag}.md", report)


if __name__ == "__main__":
    main()

"""Registering and loading a large manifest dataset (issue 9: 100,000 rows register in under
a minute on our machines).

Generates N small PNGs (28x28 grayscale: MNIST digits when UNLEARN_DATA_DIR has MNIST,
else seeded noise) and a CSV manifest with sample_id, path, label, split (90% train) and
subject_id (five samples per subject) in a temporary folder, then times, on a fresh SQLite
database:
- registration through the service (read + check every row, decode every image,
  checksum, pack, commit with its audit entry), with the reading phase timed apart;
- load_dataset (memory-map, verify the checksum, convert to float32 ImageData);
- a second get from the DatasetProvider (cached).

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/register_manifest.py [--rows N]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DATA_DIR, write_result  # noqa: E402


def source_images(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    from app.ml.data import DataUnavailableError, load_mnist

    try:
        mnist = load_mnist(DATA_DIR, download=False)
        images = (mnist.train_images[:, 0] * 255).round().to(dtype=__import__("torch").uint8)
        picks = np.arange(count) % len(images)
        return images.numpy()[picks], mnist.train_labels.numpy()[picks], "MNIST digits"
    except DataUnavailableError:
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, count), "seeded noise")


def generate(root: Path, rows: int) -> tuple[Path, str]:
    from PIL import Image

    images, labels, kind = source_images(rows)
    (root / "images").mkdir(parents=True)
    for bucket in range(100):
        (root / "images" / f"{bucket:02d}").mkdir()

    def write(index: int) -> str:
        relative = f"images/{index % 100:02d}/{index:06d}.png"
        Image.fromarray(images[index]).save(root / relative)
        return relative

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(write, range(rows), chunksize=256))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample_id", "path", "label", "split", "subject_id"])
        for index, relative in enumerate(paths):
            split = "test" if index % 10 == 9 else "train"
            writer.writerow([f"sample-{index:06d}", relative, f"class-{labels[index]}",
                             split, f"subject-{index // 5:05d}"])
    return manifest, kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    from app.datasets.formats import read_dataset
    from app.datasets.loading import DatasetProvider, load_dataset
    from app.datasets.service import register_dataset
    from app.db.migrations import upgrade
    from app.db.session import Database

    workdir = Path(tempfile.mkdtemp(prefix="unlearn-manifest-bench-"))
    try:
        started = time.perf_counter()
        manifest, kind = generate(workdir / "data", args.rows)
        generate_s = time.perf_counter() - started
        size_mb = sum(f.stat().st_size for f in (workdir / "data").rglob("*.png")) / 1e6

        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        db = Database(url)
        dataset_dir = workdir / "datasets"

        started = time.perf_counter()
        raw = read_dataset("manifest", str(manifest))
        read_s = time.perf_counter() - started
        del raw

        started = time.perf_counter()
        row, _ = register_dataset(db, dataset_dir, name="bench", format="manifest",
                                  path=str(manifest), actor="benchmark")
        register_s = time.perf_counter() - started

        started = time.perf_counter()
        data = load_dataset(row, dataset_dir)
        load_s = time.perf_counter() - started
        assert data.num_train == row.train_size and len(data.sample_keys) == row.train_size

        provider = DatasetProvider(db, dataset_dir)
        started = time.perf_counter()
        provider.get("bench")
        first_get_s = time.perf_counter() - started
        started = time.perf_counter()
        provider.get("bench")
        cached_get_s = time.perf_counter() - started
        packed_mb = sum(f.stat().st_size for f in (dataset_dir / row.storage_key).iterdir()) / 1e6
        db.dispose()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    load = os.getloadavg()[0]
    lines = [
        "# Registering a manifest dataset",
        "",
        f"{args.rows:,} rows ({row.train_size:,} train / {row.test_size:,} test), "
        f"28x28 grayscale PNGs of {kind} ({size_mb:.1f} MB of PNG files), CSV manifest with "
        f"subject_id; SQLite. Generating the files took {generate_s:.1f} s (not counted).",
        "",
        "| step | seconds |",
        "| --- | --- |",
        f"| read + check every row and image (reader alone) | {read_s:.1f} |",
        f"| registration: read, check, checksum, pack ({packed_mb:.0f} MB), commit + audit | "
        f"{register_s:.1f} |",
        f"| load_dataset: memory-map, verify checksum, float32 ImageData | {load_s:.2f} |",
        f"| DatasetProvider.get, first (loads) | {first_get_s:.2f} |",
        f"| DatasetProvider.get, cached | {cached_get_s * 1000:.2f} ms |",
        "",
        f"Target: registration under 60 s: {'met' if register_s < 60 else 'NOT met'}.",
        f"Machine: {os.cpu_count()} CPUs, no GPU; load average at the end {load:.1f} "
        "(the CPUs are shared with other jobs).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.rows == 100_000:
        write_result("register_manifest.md", text)


if __name__ == "__main__":
    main()

"""Registered datasets: every format from small generated data, every bad input refused with
its row and problem and nothing left behind, the checksum (MNIST's unchanged), verified
loading into ImageData, the provider, the routes and the CLI."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.audit.service import verify_chain
from app.core.errors import ConflictError, InvalidInputError, NotFoundError
from app.datasets import service as dataset_service
from app.datasets.loading import DatasetIntegrityError, DatasetProvider, load_dataset
from app.datasets.models import Dataset
from app.datasets.service import ensure_mnist_dataset, get_dataset, register_dataset
from app.db.migrations import upgrade
from app.db.session import Database
from app.main import create_app
from tests.conftest import DATA_DIR, ROOT, api_key
from tests.test_s3_store import s3_endpoint, s3_url  # noqa: F401 - fixtures

# --- Generated data -------------------------------------------------------------------


def pixels(seed: int, shape=(6, 8), channels: int = 1) -> np.ndarray:
    """A distinct, reproducible uint8 image (H, W) or (H, W, C)."""
    rng = np.random.default_rng(seed)
    size = shape if channels == 1 else (*shape, channels)
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)


def make_imagefolder(root: Path, classes=("cat", "dog", "emu"), train_per_class=3,
                     test_per_class=2, channels: int = 3) -> dict[str, np.ndarray]:
    """PATH/train/<class>/<n>.png, PATH/test/<class>/<n>.png; returns relative path -> pixels."""
    written = {}
    seed = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in classes:
            for index in range(count):
                seed += 1
                array = pixels(seed, channels=channels)
                relative = f"{name}/{index:03d}.png"
                save_png(root / split / relative, array)
                written[f"{split}/{relative}"] = array
    return written


MANIFEST_ROWS = [
    # sample_id, image file, label, split, subject
    ("alice-1", "a1.png", "tulip", "train", "alice"),
    ("alice-2", "a2.png", "rose", "train", "alice"),
    ("bob-1", "b1.png", "daisy", "train", "bob"),
    ("nobody-1", "n1.png", "rose", "train", ""),
    ("carol-1", "c1.png", "tulip", "test", "carol"),
    ("dave-1", "d1.png", "daisy", "test", "dave"),
]


def write_manifest(root: Path, rows, kind: str = "csv", columns=None,
                   make_images: bool = True) -> Path:
    columns = columns or ["sample_id", "path", "label", "split", "subject_id"]
    root.mkdir(parents=True, exist_ok=True)
    if make_images:
        for number, row in enumerate(rows):
            save_png(root / "images" / row[1], pixels(100 + number))
    records = [dict(zip(columns, (row[0], f"images/{row[1]}", *row[2:]))) for row in rows]
    if kind == "csv":
        import csv

        path = root / "manifest.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(size).to_bytes(4, "big") for size in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_idx(root: Path, gz: bool = False, train=20, test=7, classes=4) -> dict:
    rng = np.random.default_rng(5)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 5, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(train) % classes).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 5, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(test) % classes).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(root / name, array, gz)
    return arrays


# --- Fixtures ---------------------------------------------------------------------------


@pytest.fixture
def db(database_url):
    """A migrated database (SQLite and PostgreSQL)."""
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path):
    """A migrated SQLite database, for the checks that do not depend on the backend."""
    url = f"sqlite:///{tmp_path / 'datasets.db'}"
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


def register(db, dataset_dir, name, format, path, classes=None):
    return register_dataset(db, dataset_dir, name=name, format=format, path=str(path),
                            classes=classes, actor="test")


def assert_nothing_registered(db, dataset_dir: Path) -> None:
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEntry)
                              .where(AuditEntry.action == "dataset.registered")) == 0
    leftovers = list(dataset_dir.iterdir()) if dataset_dir.exists() else []
    assert leftovers == [], leftovers


# --- Each format registers and loads ----------------------------------------------------


def test_imagefolder_registers_and_loads_as_image_data(db, tmp_path):
    written = make_imagefolder(tmp_path / "flowers", channels=3)
    dataset_dir = tmp_path / "datasets"
    row, notes = register(db, dataset_dir, "pets", "imagefolder", tmp_path / "flowers")
    assert notes == []
    assert (row.format, row.class_names, row.image_shape) == ("imagefolder",
                                                               ["cat", "dog", "emu"], [3, 6, 8])
    assert (row.train_size, row.test_size, row.has_sample_ids, row.has_subjects) == \
        (9, 6, True, False)
    assert row.checksum.startswith("sha256:") and len(row.checksum) == 71

    data = load_dataset(row, dataset_dir)
    assert data.train_images.shape == (9, 3, 6, 8) and data.train_images.dtype == torch.float32
    assert data.test_images.shape == (6, 3, 6, 8)
    assert data.class_names == ("cat", "dog", "emu")
    assert data.train_ids.tolist() == list(range(9))
    expected_keys = sorted(key.removeprefix("train/") for key in written if key.startswith("train/"))
    assert list(data.sample_keys) == expected_keys
    assert data.subject_keys is None
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Pixels survive exactly: image i is the file named by sample key i, scaled to [0, 1].
    for position in (0, 4, 8):
        original = written["train/" + data.sample_keys[position]].transpose(2, 0, 1)
        assert torch.equal(data.train_images[position],
                           torch.from_numpy(original).float() / 255)
    with db.session() as session:
        entry = session.scalars(select(AuditEntry)
                                .where(AuditEntry.action == "dataset.registered")).one()
        assert entry.details["dataset"] == "pets" and entry.details["checksum"] == row.checksum
        assert entry.actor == "test"
        assert verify_chain(session).intact


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_manifest_registers_with_subjects(sqlite_db, tmp_path, kind):
    path = write_manifest(tmp_path / "data", MANIFEST_ROWS, kind)
    row, _ = register(sqlite_db, tmp_path / "datasets", "flowers", "manifest", path)
    assert row.class_names == ["daisy", "rose", "tulip"]  # sorted distinct labels
    assert (row.train_size, row.test_size, row.image_shape) == (4, 2, [1, 6, 8])
    assert row.has_sample_ids and row.has_subjects
    data = load_dataset(row, tmp_path / "datasets")
    assert data.sample_keys == ("alice-1", "alice-2", "bob-1", "nobody-1")
    assert data.subject_keys == ("alice", "alice", "bob", None)
    assert data.train_labels.tolist() == [2, 1, 0, 1]
    assert data.test_labels.tolist() == [2, 0]
    assert torch.equal(data.train_images[2, 0], torch.from_numpy(pixels(102)).float() / 255)


def test_csv_and_parquet_manifests_of_the_same_data_have_one_checksum(sqlite_db, tmp_path):
    csv_row, _ = register(sqlite_db, tmp_path / "datasets", "from-csv", "manifest",
                          write_manifest(tmp_path / "data", MANIFEST_ROWS, "csv"))
    parquet_row, _ = register(sqlite_db, tmp_path / "datasets", "from-parquet", "manifest",
                              write_manifest(tmp_path / "data", MANIFEST_ROWS, "parquet"))
    assert csv_row.checksum == parquet_row.checksum
    # The IDs are part of the content: another subject makes another checksum.
    changed = [row if row[0] != "bob-1" else (*row[:4], "robert") for row in MANIFEST_ROWS]
    other, _ = register(sqlite_db, tmp_path / "datasets", "renamed-subject", "manifest",
                        write_manifest(tmp_path / "other", changed, "csv"))
    assert other.checksum != csv_row.checksum


def test_manifest_labels_as_indices_with_a_class_list_and_without_subjects(sqlite_db,
                                                                            tmp_path):
    rows = [("s1", "1.png", "2", "train"), ("s2", "2.png", "0", "train"),
            ("s3", "3.png", "rose", "test")]
    path = write_manifest(tmp_path / "data", rows, "csv",
                          columns=["sample_id", "path", "label", "split"])
    row, _ = register(sqlite_db, tmp_path / "datasets", "indexed", "manifest", path,
                      classes=["daisy", "rose", "tulip"])
    data = load_dataset(row, tmp_path / "datasets")
    assert data.class_names == ("daisy", "rose", "tulip")
    assert data.train_labels.tolist() == [2, 0] and data.test_labels.tolist() == [1]
    assert data.subject_keys is None and not row.has_subjects


def test_manifest_of_integer_labels_names_classes_by_number(sqlite_db, tmp_path):
    rows = [("s1", "1.png", "3", "train"), ("s2", "2.png", "0", "train"),
            ("s3", "3.png", "1", "test")]
    path = write_manifest(tmp_path / "data", rows, "csv",
                          columns=["sample_id", "path", "label", "split"])
    row, _ = register(sqlite_db, tmp_path / "datasets", "numbers", "manifest", path)
    assert row.class_names == ["0", "1", "2", "3"]


def test_manifest_images_from_fsspec_urls(sqlite_db, tmp_path):
    """Paths may be URLs fsspec opens (s3:// goes the same way; memory:// needs no server),
    and a manifest at a URL resolves relative paths against its own folder."""
    import fsspec

    memory = fsspec.filesystem("memory")
    try:
        for number, (sample, name, *_rest) in enumerate(MANIFEST_ROWS):
            buffer = Image.fromarray(pixels(100 + number))
            with memory.open(f"/bucket/images/{name}", "wb") as handle:
                buffer.save(handle, format="PNG")
        lines = ["sample_id,path,label,split,subject_id"] + [
            f"{s},{'images/' + p if i % 2 else 'memory://bucket/images/' + p},{l},{sp},{su}"
            for i, (s, p, l, sp, su) in enumerate(MANIFEST_ROWS)]
        with memory.open("/bucket/manifest.csv", "w") as handle:
            handle.write("\n".join(lines) + "\n")
        row, _ = register(sqlite_db, tmp_path / "datasets", "remote", "manifest",
                          "memory://bucket/manifest.csv")
        local, _ = register(sqlite_db, tmp_path / "datasets", "local", "manifest",
                            write_manifest(tmp_path / "data", MANIFEST_ROWS, "csv"))
        assert row.checksum == local.checksum and row.source == "memory://bucket/manifest.csv"
    finally:
        memory.rm("/bucket", recursive=True)


def test_manifest_and_images_in_s3(sqlite_db, tmp_path, s3_url, s3_endpoint, monkeypatch):
    """s3:// for real (moto's S3 server): a Parquet manifest in a bucket naming its images
    relative to itself; the endpoint comes from botocore's AWS_ENDPOINT_URL."""
    import fsspec

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    local = write_manifest(tmp_path / "data", MANIFEST_ROWS, "parquet")
    fs = fsspec.filesystem("s3", endpoint_url=s3_endpoint, skip_instance_cache=True)
    prefix = s3_url.removeprefix("s3://") + "/flowers"
    fs.put(str(tmp_path / "data" / "images"), f"{prefix}/images", recursive=True)
    fs.put(str(local), f"{prefix}/manifest.parquet")
    row, _ = register(sqlite_db, tmp_path / "datasets", "s3-flowers", "manifest",
                      f"s3://{prefix}/manifest.parquet")
    same, _ = register(sqlite_db, tmp_path / "datasets", "local-flowers", "manifest", local)
    assert row.checksum == same.checksum and row.train_size == 4
    with pytest.raises(InvalidInputError) as error:
        register(sqlite_db, tmp_path / "datasets", "nothing", "manifest",
                 f"s3://{prefix}/missing.csv")
    assert "manifest not found" in error.value.message


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_files_plain_or_gzipped(sqlite_db, tmp_path, gz):
    arrays = make_idx(tmp_path / "idx", gz=gz)
    row, _ = register(sqlite_db, tmp_path / "datasets", "tiny-idx", "idx", tmp_path / "idx")
    assert (row.class_names, row.image_shape, row.train_size, row.test_size) == \
        (["0", "1", "2", "3"], [1, 5, 4], 20, 7)
    assert not row.has_sample_ids and not row.has_subjects
    data = load_dataset(row, tmp_path / "datasets")
    assert data.sample_keys is None and data.subject_keys is None
    assert torch.equal(data.train_images[:, 0] * 255,
                       torch.from_numpy(arrays["train-images-idx3-ubyte"]).float())
    assert data.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_idx_plain_and_gzipped_and_mnist_raw_layout_agree(sqlite_db, tmp_path):
    make_idx(tmp_path / "plain", gz=False)
    make_idx(tmp_path / "zipped" / "MNIST" / "raw", gz=True)
    plain, _ = register(sqlite_db, tmp_path / "datasets", "plain", "idx", tmp_path / "plain")
    zipped, _ = register(sqlite_db, tmp_path / "datasets", "zipped", "idx",
                         tmp_path / "zipped", classes=["a", "b", "c", "d"])
    assert plain.checksum == zipped.checksum  # class names are not content
    assert zipped.class_names == ["a", "b", "c", "d"]


def test_mnist_registers_with_the_checksum_its_model_card_records(mnist, tmp_path):
    """MNIST as dataset 'mnist': the same checksum as app.ml.data and the shipped card,
    and the same tensors."""
    url = f"sqlite:///{tmp_path / 'mnist.db'}"
    upgrade(url)
    database = Database(url)
    try:
        from app.core.config import load_settings

        settings = load_settings(database_url=url, data_dir=DATA_DIR,
                                 dataset_dir=tmp_path / "datasets")
        row = ensure_mnist_dataset(database, settings)
        card = json.loads((ROOT / "models/base/mnist-cnn-base.json").read_text())
        assert row.checksum == mnist.checksum == card["dataset_checksum"]
        assert (row.name, row.format, row.train_size, row.test_size) == ("mnist", "idx",
                                                                         60000, 10000)
        assert ensure_mnist_dataset(database, settings).storage_key == row.storage_key
        data = load_dataset(row, settings.dataset_dir)
        assert data.class_names == mnist.class_names and data.sample_keys is None
        assert torch.equal(data.train_labels, mnist.train_labels)
        assert torch.equal(data.test_images[::997], mnist.test_images[::997])
        assert torch.equal(data.train_images[::4999], mnist.train_images[::4999])
    finally:
        database.dispose()


def test_other_files_where_mnist_goes_are_not_registered_as_mnist(sqlite_db, tmp_path):
    """Issue 9: Fashion-MNIST (here: any other IDX files) put under MNIST/raw must not
    become dataset 'mnist'."""
    from app.core.config import load_settings

    make_idx(tmp_path / "data" / "MNIST" / "raw", gz=True)
    settings = load_settings(database_url=sqlite_db.url, data_dir=tmp_path / "data",
                             dataset_dir=tmp_path / "datasets")
    with pytest.raises(InvalidInputError) as error:
        ensure_mnist_dataset(sqlite_db, settings)
    assert "not the expected sha256:1e35582d" in error.value.message
    assert_nothing_registered(sqlite_db, tmp_path / "datasets")


def test_fashion_mnist_from_debian_gzipped_files(sqlite_db, tmp_path):
    source = Path("/usr/share/datasets/fashion-mnist")
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
             "Sneaker", "Bag", "Ankle boot"]
    row, _ = register(sqlite_db, tmp_path / "datasets", "fashion-mnist", "idx", source,
                      classes=names)
    assert (row.train_size, row.test_size, row.image_shape) == (60000, 10000, [1, 28, 28])
    assert row.class_names == names


# --- Conversions between pixel modes ----------------------------------------------------


def test_rgba_palette_and_gray_images_are_converted_and_reported(sqlite_db, tmp_path):
    root = tmp_path / "modes"
    save_png(root / "train/a/rgba.png", pixels(1, channels=4))  # RGBA -> RGB
    save_png(root / "train/b/rgb.png", pixels(2, channels=3))
    save_png(root / "test/a/palette.png", pixels(3, channels=3), mode="P")  # colour palette
    row, notes = register(sqlite_db, tmp_path / "datasets", "colour", "imagefolder", root)
    assert row.image_shape == [3, 6, 8]
    assert any("RGBA -> RGB (alpha dropped): 1" in note for note in notes)
    assert any("palette -> RGB: 1" in note for note in notes)
    data = load_dataset(row, tmp_path / "datasets")
    assert torch.equal(data.train_images[0] * 255,
                       torch.from_numpy(pixels(1, channels=4)[..., :3].transpose(2, 0, 1)).float())

    gray = tmp_path / "gray"
    save_png(gray / "train/a/la.png", pixels(4, channels=2))  # LA -> L
    save_png(gray / "train/b/l.png", pixels(5))
    save_png(gray / "test/a/p.png", pixels(6), mode="P")  # a palette of grays -> L
    row, notes = register(sqlite_db, tmp_path / "datasets", "gray", "imagefolder", gray)
    assert row.image_shape == [1, 6, 8]
    assert any("alpha dropped" in note for note in notes)
    assert any("palette -> grayscale" in note for note in notes)


# --- Bad input: refused with the row and the problem, nothing registered ----------------


def _bad_manifest(rows, columns=None, classes=None, extra=None):
    def build(root: Path):
        path = write_manifest(root, rows, "csv", columns=columns)
        if extra:
            extra(root)
        return "manifest", path, classes
    return build


def _missing_file(root: Path):
    (root / "images" / "b1.png").unlink()


def _garbage_image(root: Path):
    (root / "images" / "a2.png").write_bytes(b"not a png at all")


def _other_size(root: Path):
    save_png(root / "images" / "b1.png", pixels(1, shape=(6, 9)))


def _other_channels(root: Path):
    save_png(root / "images" / "c1.png", pixels(1, channels=3))


def _imagefolder(change):
    def build(root: Path):
        make_imagefolder(root, channels=1)
        change(root)
        return "imagefolder", root, None
    return build


def _idx(change):
    def build(root: Path):
        make_idx(root)
        change(root)
        return "idx", root, None
    return build


BAD_INPUTS = {
    "missing file": (_bad_manifest(MANIFEST_ROWS, extra=_missing_file),
                     "manifest row 3 (sample_id 'bob-1'): image file not found: images/b1.png"),
    "unreadable image": (_bad_manifest(MANIFEST_ROWS, extra=_garbage_image),
                         "manifest row 2 (sample_id 'alice-2'): unreadable image"),
    "other size": (_bad_manifest(MANIFEST_ROWS, extra=_other_size),
                   "manifest row 3 (sample_id 'bob-1'): image is 9x6 grayscale but the "
                   "dataset's images are 8x6 grayscale"),
    "other channel count": (_bad_manifest(MANIFEST_ROWS, extra=_other_channels),
                            "manifest row 5 (sample_id 'carol-1'): image is 8x6 RGB but the "
                            "dataset's images are 8x6 grayscale"),
    "duplicate sample_id": (
        _bad_manifest(MANIFEST_ROWS[:3] + [("alice-1", "x.png", "rose", "test", "")]),
        "manifest row 4 (sample_id 'alice-1'): duplicate sample_id (first used in row 1)"),
    "label outside the classes": (
        _bad_manifest(MANIFEST_ROWS, classes=["rose", "tulip"]),
        "manifest row 3 (sample_id 'bob-1'): label 'daisy' is not one of the classes"),
    "label index outside the classes": (
        _bad_manifest([("s1", "1.png", "1", "train", ""), ("s2", "2.png", "7", "test", "")],
                      classes=["rose", "tulip"]),
        "manifest row 2 (sample_id 's2'): label 7 is outside the 2 classes"),
    "empty test split": (_bad_manifest([r for r in MANIFEST_ROWS if r[3] == "train"]),
                         "the test split is empty"),
    "unknown split": (_bad_manifest(MANIFEST_ROWS[:2] + [("v", "v.png", "rose", "val", "")]),
                      "manifest row 3 (sample_id 'v'): split 'val' is not 'train' or 'test'"),
    "missing column": (_bad_manifest([r[:2] + r[3:] for r in MANIFEST_ROWS],
                                     columns=["sample_id", "path", "split", "subject_id"]),
                       "the manifest has no 'label' column"),
    "not a manifest": (lambda root: ("manifest", root, None), "not a CSV or Parquet manifest"),
    "imagefolder unreadable file": (
        _imagefolder(lambda root: (root / "train/dog/001.png").write_bytes(b"\x89PNG broken")),
        "train/dog/001.png: unreadable image"),
    "imagefolder other size": (
        _imagefolder(lambda root: save_png(root / "test/emu/000.png", pixels(1, (7, 8)))),
        "test/emu/000.png: image is 8x7 grayscale but the dataset's images are 8x6 grayscale"),
    "imagefolder unknown test class": (
        _imagefolder(lambda root: save_png(root / "test/yak/000.png", pixels(1))),
        "test/yak/000.png: class 'yak' is not one of the classes"),
    "imagefolder not an image": (
        _imagefolder(lambda root: (root / "train/cat/notes.txt").write_text("hello")),
        "train/cat/notes.txt: not a .png, .jpg or .jpeg image"),
    "imagefolder empty test split": (
        _imagefolder(lambda root: [p.unlink() for p in (root / "test").rglob("*.png")]),
        "the test split is empty"),
    "imagefolder no train folder": (lambda root: ("imagefolder", root, None),
                                    "has no train/ folder"),
    "idx truncated": (_idx(lambda root: (root / "t10k-images-idx3-ubyte").write_bytes(
        (root / "t10k-images-idx3-ubyte").read_bytes()[:-3])), "t10k-images-idx3-ubyte: "),
    "idx labels do not match images": (
        _idx(lambda root: write_idx(root / "train-labels-idx1-ubyte", np.zeros(3, np.uint8),
                                    False)),
        "train: 20 images but 3 labels"),
    "idx no files": (lambda root: ("idx", root, None), "no IDX files in"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_its_row_and_leaves_nothing(sqlite_db, tmp_path, case):
    build, message = BAD_INPUTS[case]
    root = tmp_path / "input"
    root.mkdir()
    format, path, classes = build(root)
    dataset_dir = tmp_path / "datasets"
    with pytest.raises(InvalidInputError) as error:
        register(sqlite_db, dataset_dir, "bad", format, path, classes)
    assert message in error.value.message, error.value.message
    assert error.value.field in ("path", "classes")
    assert_nothing_registered(sqlite_db, dataset_dir)


@pytest.mark.parametrize("name, format, path, field", [
    ("bad name!", "idx", "/tmp", "name"),
    ("trailing-newline\n", "idx", "/tmp", "name"),
    ("ok", "idx", "/tmp/\ud800", "path"),
    ("ok", "manifest", "/tmp/m.csv", "classes"),
    ("../escape", "idx", "/tmp", "name"),
    ("ok", "tfrecord", "/tmp", "format"),
    ("ok", "idx", "/tmp/\x00nul", "path"),
    ("ok", "idx", "x" * 1001, "path"),
])
def test_bad_name_format_or_path_is_422_naming_the_field(sqlite_db, tmp_path, name, format,
                                                         path, field):
    classes = ["a", "a"] if field == "classes" else None
    with pytest.raises(InvalidInputError) as error:
        register(sqlite_db, tmp_path / "datasets", name, format, path, classes)
    assert error.value.field == field
    assert_nothing_registered(sqlite_db, tmp_path / "datasets")


def test_a_name_is_registered_once(db, tmp_path):
    make_idx(tmp_path / "idx")
    dataset_dir = tmp_path / "datasets"
    first, _ = register(db, dataset_dir, "tiny", "idx", tmp_path / "idx")
    with pytest.raises(ConflictError) as error:
        register(db, dataset_dir, "tiny", "idx", tmp_path / "idx")
    assert "already registered" in error.value.message and error.value.status_code == 409
    assert [p.name for p in dataset_dir.iterdir()] == [first.storage_key]


def test_concurrent_registrations_of_one_name_leave_one_dataset(db, tmp_path, monkeypatch):
    """Both pass the early check; the database decides; the loser removes its copy."""
    make_idx(tmp_path / "idx")
    dataset_dir = tmp_path / "datasets"
    barrier = threading.Barrier(2)
    original = dataset_service.storage.pack

    def pack_together(*args, **kwargs):
        key = original(*args, **kwargs)
        barrier.wait(timeout=30)
        return key

    monkeypatch.setattr(dataset_service.storage, "pack", pack_together)
    outcomes = []

    def attempt():
        try:
            outcomes.append(register(db, dataset_dir, "race", "idx", tmp_path / "idx").row)
        except ConflictError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    rows = [o for o in outcomes if isinstance(o, Dataset)]
    assert len(rows) == 1 and sum(isinstance(o, ConflictError) for o in outcomes) == 1
    assert [p.name for p in dataset_dir.iterdir()] == [rows[0].storage_key]


def test_a_failed_commit_removes_the_packed_copy(sqlite_db, tmp_path, monkeypatch):
    make_idx(tmp_path / "idx")

    def broken_record(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(dataset_service, "record", broken_record)
    with pytest.raises(RuntimeError):
        register(sqlite_db, tmp_path / "datasets", "tiny", "idx", tmp_path / "idx")
    assert_nothing_registered(sqlite_db, tmp_path / "datasets")


# --- Loading refuses a changed copy; the provider caches ---------------------------------


@pytest.fixture
def registered(sqlite_db, tmp_path):
    path = write_manifest(tmp_path / "data", MANIFEST_ROWS, "csv")
    row, _ = register(sqlite_db, tmp_path / "datasets", "flowers", "manifest", path)
    return row, tmp_path / "datasets"


def _flip_last_pixel(folder: Path):
    path = folder / "train_images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _rename_subject(folder: Path):
    index = json.loads((folder / "index.json").read_text())
    index["subject_ids"]["train"][0] = "mallory"
    (folder / "index.json").write_text(json.dumps(index))


def _drop_test_row(folder: Path):
    labels = np.load(folder / "test_labels.npy")
    np.save(folder / "test_labels.npy", labels[:-1])


@pytest.mark.parametrize("tamper, message", [
    (_flip_last_pixel, "does not match the recorded checksum"),
    (_rename_subject, "does not match the recorded checksum"),
    (_drop_test_row, "holds test_labels of shape (1,)"),
    (lambda folder: (folder / "train_labels.npy").unlink(), "has no train_labels.npy"),
    (lambda folder: __import__("shutil").rmtree(folder), "is missing from"),
])
def test_a_changed_packed_copy_is_refused(registered, tamper, message):
    row, dataset_dir = registered
    assert load_dataset(row, dataset_dir).num_train == 4
    tamper(dataset_dir / row.storage_key)
    with pytest.raises(DatasetIntegrityError) as error:
        load_dataset(row, dataset_dir)
    assert message in error.value.message and "refusing to load" in error.value.message
    assert error.value.status_code == 503


def test_provider_loads_once_caches_by_name_and_is_bounded(sqlite_db, registered, tmp_path,
                                                           monkeypatch):
    row, dataset_dir = registered
    make_idx(tmp_path / "idx")
    register(sqlite_db, dataset_dir, "digits", "idx", tmp_path / "idx")
    from app.datasets import loading

    calls = []
    original = loading.load_dataset

    def counted(*args):
        calls.append(args[0].name)
        return original(*args)

    monkeypatch.setattr(loading, "load_dataset", counted)
    provider = DatasetProvider(sqlite_db, dataset_dir, max_loaded=1)
    results = []
    threads = [threading.Thread(target=lambda: results.append(provider.get("flowers")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert calls == ["flowers"] and len({id(data) for data in results}) == 1
    assert provider.get("flowers") is results[0]
    assert provider.get("digits").class_names == ("0", "1", "2", "3")
    provider.get("flowers")  # evicted by digits (bound 1): loaded again
    assert calls == ["flowers", "digits", "flowers"]
    with pytest.raises(NotFoundError) as error:
        provider.get("nope")
    assert "'nope'" in error.value.message


# --- Migration, routes, CLI -------------------------------------------------------------


def test_migration_0005_upgrades_a_0004_database_and_the_chain_still_verifies(database_url,
                                                                             tmp_path):
    from app.audit.service import AuditAction, record

    upgrade(database_url, "0004")
    database = Database(database_url)
    try:
        with database.session() as session:
            record(session, AuditAction.key_created, "before-upgrade", details={"n": 1})
        upgrade(database_url)
        make_idx(tmp_path / "idx")
        row, _ = register(database, tmp_path / "datasets", "after", "idx", tmp_path / "idx")
        with database.session() as session:
            assert get_dataset(session, "after").checksum == row.checksum
            result = verify_chain(session)
        assert result.intact and result.entries_checked == 2
    finally:
        database.dispose()


def test_routes_admin_registers_anyone_reads(ctx, tmp_path):
    path = write_manifest(tmp_path / "data", MANIFEST_ROWS, "parquet")
    admin = {"Authorization": f"Bearer {api_key(ctx, 'admin', name='ds-admin')}"}
    reader = {"Authorization": f"Bearer {api_key(ctx, 'client', name='ds-client')}"}
    body = {"name": "flowers", "format": "manifest", "path": str(path)}
    with TestClient(create_app(ctx, start_worker=False)) as client:
        denied = client.post("/datasets", json=body, headers=reader)
        assert denied.status_code == 403
        created = client.post("/datasets", json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert created.json()["class_names"] == ["daisy", "rose", "tulip"]
        assert created.json()["has_subjects"] is True and created.json()["notes"] == []

        again = client.post("/datasets", json=body, headers=admin)
        assert again.status_code == 409 and again.json()["error"]["field"] == "name"
        listed = client.get("/datasets", headers=reader).json()
        assert [item["name"] for item in listed["items"]] == ["flowers"]
        one = client.get("/datasets/flowers", headers=reader).json()
        assert one["checksum"] == created.json()["checksum"] and one["train_size"] == 4
        assert one["links"]["self"] == "/datasets/flowers"
        missing = client.get("/datasets/nope", headers=reader)
        assert missing.status_code == 404 and "'nope'" in missing.json()["error"]["message"]
        # Names that could never be registered are unknown, on PostgreSQL too; a NUL is
        # refused before any route by the request limits (422), never a 500.
        assert client.get("/datasets/a%20b", headers=reader).status_code == 404
        assert client.get("/datasets/a%00b", headers=reader).status_code in (404, 422)
        assert client.get("/datasets?cursor=AAAA", headers=reader).status_code == 422
        page = client.get("/datasets?limit=1", headers=reader).json()
        assert page["next_cursor"] is None and len(page["items"]) == 1

        unknown = client.post("/datasets", json={**body, "name": "x", "format": "tfrecord"},
                              headers=admin)
        assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "format"
        bad = client.post("/datasets", json={**body, "name": "y", "classes": ["rose"]},
                          headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "path"
        assert "manifest row 1 (sample_id 'alice-1'): label 'tulip'" in \
            bad.json()["error"]["message"]
        assert client.get("/datasets/y", headers=reader).status_code == 404


def test_cli_register_list_show(ctx, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    make_imagefolder(tmp_path / "pets", channels=1)
    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    monkeypatch.setenv("UNLEARN_DATASET_DIR", str(tmp_path / "cli-datasets"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(cli, ["datasets", "register", "pets", "--format",
                                      "imagefolder", "--path", str(tmp_path / "pets"),
                                      "--classes", "cat,dog,emu,fox"])
        assert created.exit_code == 0, created.output
        assert "registered dataset pets (imagefolder): 9 train / 6 test images of 1x6x8, " \
               "4 classes, sha256:" in created.output
        listed = runner.invoke(cli, ["datasets", "list"])
        assert listed.exit_code == 0 and listed.output.startswith("pets ")
        shown = runner.invoke(cli, ["datasets", "show", "pets"])
        assert json.loads(shown.stdout)["class_names"] == ["cat", "dog", "emu", "fox"]

        again = runner.invoke(cli, ["datasets", "register", "pets", "--format", "idx",
                                    "--path", str(tmp_path)])
        assert again.exit_code == 1
        assert "error: a dataset named 'pets' is already registered" in again.output
        bad = runner.invoke(cli, ["datasets", "register", "other", "--format", "imagefolder",
                                  "--path", str(tmp_path / "pets"), "--classes", "cat,dog"])
        assert bad.exit_code == 1
        assert bad.output.strip().splitlines() == [
            "error: train/emu: class folder 'emu' is not one of the classes given "
            "['cat', 'dog']"]
        missing = runner.invoke(cli, ["datasets", "show", "nope"])
        assert missing.exit_code == 1 and "no dataset named 'nope'" in missing.output
        assert sorted(p.name for p in (tmp_path / "cli-datasets").iterdir()) == \
            [json.loads(shown.stdout)["storage_key"]]
    finally:
        get_settings.cache_clear()

"""``imagefolder``: torchvision's layout, ``PATH/train/<class>/*.png|jpg|jpeg`` and
``PATH/test/<class>/*``.

Class names are the sorted names of the train folders (or the class list given, which must
name every folder). A training image's sample ID is its path relative to ``PATH/train``
with forward slashes (``cat/0001.png``); images are ordered by that path, so a training
image's integer ID is its position in that order. Hidden files (``.DS_Store``) are skipped;
any other file that is not a PNG or JPEG is refused rather than silently left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.errors import InvalidInputError
from app.datasets.formats.common import (
    IMAGE_EXTENSIONS,
    ImageProblem,
    ImageStack,
    RawDataset,
    check_classes,
    check_not_empty,
)


def _visible(entries) -> list[Path]:
    return sorted((entry for entry in entries if not entry.name.startswith(".")),
                  key=lambda entry: entry.name)


def _list_split(root: Path, split: str) -> list[tuple[str, str]]:
    """(class folder name, relative path) of every image of the split, in path order."""
    folder = root / split
    if not folder.is_dir():
        raise InvalidInputError(f"{root} has no {split}/ folder (expected "
                                f"{split}/<class>/<image>.png)", "path")
    items = []
    for class_dir in _visible(folder.iterdir()):
        if not class_dir.is_dir():
            raise InvalidInputError(f"{split}/{class_dir.name}: a file where a class folder "
                                    f"is expected", "path")
        for file in _visible(class_dir.rglob("*")):
            if file.is_dir():
                continue
            relative = file.relative_to(folder).as_posix()
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            if file.suffix.lower() not in IMAGE_EXTENSIONS:
                raise InvalidInputError(f"{split}/{relative}: not a .png, .jpg or .jpeg image",
                                        "path")
            items.append((class_dir.name, relative))
    items.sort(key=lambda item: item[1])
    return items


def _read_bytes(path: Path):
    def load() -> bytes:
        try:
            return path.read_bytes()
        except OSError as error:
            raise ImageProblem(f"cannot read the file ({error.strerror or error})") from None
    return load


def read(path: str, classes: list[str] | None = None) -> RawDataset:
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"{path} is not a directory", "path")
    train = _list_split(root, "train")
    test = _list_split(root, "test")
    train_classes = sorted({name for name, _ in train} |
                           {d.name for d in _visible((root / "train").iterdir()) if d.is_dir()})
    names = check_classes(classes)
    if names is None:
        names = train_classes
        if not names:
            raise InvalidInputError(f"{root / 'train'} has no class folders", "path")
    else:
        for folder in train_classes:
            if folder not in names:
                raise InvalidInputError(f"train/{folder}: class folder {folder!r} is not one of "
                                        f"the classes given {names}", "classes")
    index = {name: position for position, name in enumerate(names)}
    for class_name, relative in test:
        if class_name not in index:
            raise InvalidInputError(f"test/{relative}: class {class_name!r} is not one of the "
                                    f"classes {names}", "path")
    check_not_empty("train", len(train), f"{root}/train")
    check_not_empty("test", len(test), f"{root}/test")

    stack = ImageStack()
    train_images = stack.read([_read_bytes(root / "train" / rel) for _, rel in train], None,
                              lambda i: f"train/{train[i][1]}")
    test_images = stack.read([_read_bytes(root / "test" / rel) for _, rel in test],
                             train_images.shape[1:], lambda i: f"test/{test[i][1]}")
    return RawDataset(
        train_images=train_images,
        train_labels=np.array([index[name] for name, _ in train], dtype=np.int64),
        test_images=test_images,
        test_labels=np.array([index[name] for name, _ in test], dtype=np.int64),
        class_names=names,
        train_sample_ids=[relative for _, relative in train],
        test_sample_ids=[relative for _, relative in test],
        notes=stack.note_lines(),
    )

"""Model artifacts: safetensors files, written atomically and verified by sha256 on load.

Nothing is ever unpickled. A write goes to a hidden temporary name, is fsynced, then
renamed into place (and the directory fsynced), so a crash leaves either no file or a
complete one under its final name, never a visible half-written file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

class ArtifactIntegrityError(RuntimeError):
    """The stored file is missing or its sha256 differs from the registry's record."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialize_state(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Deterministic bytes for the same tensors and metadata, so that sha256 identifies
    content. (safetensors stores metadata in a hash map whose order varies between calls,
    so all metadata goes into one key as sorted JSON.)"""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    return save_safetensors(tensors, metadata={"unlearn": json.dumps(metadata, sort_keys=True)})


def deserialize_state(data: bytes) -> dict[str, torch.Tensor]:
    return load_safetensors(data)


def read_metadata(data: bytes) -> dict:
    """The metadata ``serialize_state`` wrote (safetensors header: 8-byte length + JSON)."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    return json.loads(header.get("__metadata__", {}).get("unlearn", "{}"))


def backbone_sha256(state: dict[str, torch.Tensor], output_layer: str) -> str:
    """Hash of every tensor except the output layer's (``output_layer`` is its module
    path, e.g. 'fc2'): equal hashes mean equal features."""
    digest = hashlib.sha256()
    for name in sorted(state):
        if name.startswith(output_layer + "."):
            continue
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


class ArtifactStore(Protocol):
    """Where version files live. Keys are relative names such as 'mnist-cnn/<uuid>.safetensors'.

    ``put`` makes an object visible only once it is complete and durable (a local rename,
    an S3 PUT), refuses to overwrite, and returns the sha256; ``get`` verifies it.
    """

    def put(self, key: str, data: bytes) -> str: ...

    def get(self, key: str, expected_sha256: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def keys(self) -> list[str]: ...

    def listing(self) -> list[tuple[str, dt.datetime]]:
        """Every stored object, temporaries of unfinished writes included, with its
        modification time (UTC): what the garbage collector looks at."""
        ...


def verify(key: str, data: bytes, expected_sha256: str) -> bytes:
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise ArtifactIntegrityError(
            f"artifact {key!r} has sha256 {actual}, but the registry recorded "
            f"{expected_sha256}: refusing to load a modified model"
        )
    return data


class LocalArtifactStore:
    """Artifacts under a local directory (a shared volume when several machines use it)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if self.root.resolve() not in resolved.parents:
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return resolved

    def put(self, key: str, data: bytes) -> str:
        """Write durably; returns the sha256. Fails if the key exists (versions are immutable)."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise FileExistsError(f"artifact {key!r} already exists")
        temporary = final.parent / f".tmp-{uuid.uuid4().hex}-{final.name}"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        finally:
            if temporary.exists():
                temporary.unlink()
        _fsync_directory(final.parent)
        return sha256_bytes(data)

    def get(self, key: str, expected_sha256: str) -> bytes:
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactIntegrityError(f"artifact {key!r} is missing from {self.root}") from None
        return verify(key, data, expected_sha256)

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def keys(self) -> list[str]:
        """Every complete artifact (temporary files of unfinished writes are hidden)."""
        if not self.root.exists():
            return []
        return sorted(str(path.relative_to(self.root)) for path in self.root.rglob("*")
                      if path.is_file() and not path.name.startswith(".tmp-"))

    def listing(self) -> list[tuple[str, dt.datetime]]:
        if not self.root.exists():
            return []
        return sorted((str(path.relative_to(self.root)),
                       dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc))
                      for path in self.root.rglob("*") if path.is_file())


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_model_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")

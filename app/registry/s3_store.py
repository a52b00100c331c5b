"""Artifacts in an S3-compatible object store (AWS S3, MinIO, Ceph...) through fsspec/s3fs.

Selected with ``UNLEARN_ARTIFACT_URL=s3://bucket/prefix`` (``UNLEARN_S3_ENDPOINT_URL`` for a
non-AWS endpoint; credentials come from the usual AWS variables or files). An S3 PUT is
atomic per object: readers see either no object or the complete one, never a partial
write, which gives the same guarantee as the local store's write-then-rename.
"""

from __future__ import annotations

import datetime as dt

from app.registry.artifacts import ArtifactIntegrityError, sha256_bytes, verify


class S3ArtifactStore:
    def __init__(self, url: str, endpoint_url: str | None = None):
        import s3fs  # optional dependency: only deployments that use S3 need it

        if not url.startswith("s3://") or len(url) <= len("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        self.url = url.rstrip("/")
        self.root = self.url[len("s3://"):]  # "bucket/prefix"
        client_kwargs = {"endpoint_url": endpoint_url} if endpoint_url else {}
        # No instance or listing caches: several processes write the same prefix, and a
        # stale listing must never hide a new artifact.
        self.fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True,
                                    use_listings_cache=False)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Upload in one PUT; fails if the key exists (versions are immutable). Keys are
        fresh UUIDs, so the check-then-put window is never contended in practice."""
        path = self._path(key)
        if self.fs.exists(path):
            raise FileExistsError(f"artifact {key!r} already exists")
        self.fs.pipe_file(path, data)
        return sha256_bytes(data)

    def get(self, key: str, expected_sha256: str) -> bytes:
        try:
            data = self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise ArtifactIntegrityError(f"artifact {key!r} is missing from {self.url}") from None
        return verify(key, data, expected_sha256)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def keys(self) -> list[str]:
        prefix = self.root + "/"
        try:
            found = self.fs.find(self.root)
        except FileNotFoundError:
            return []
        return sorted(path[len(prefix):] for path in found if path.startswith(prefix))

    def listing(self) -> list[tuple[str, dt.datetime]]:
        prefix = self.root + "/"
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return []
        listed = []
        for path, info in found.items():
            if not path.startswith(prefix):
                continue
            modified = info.get("LastModified")
            if not isinstance(modified, dt.datetime):  # unknown: treat as new, keep it
                modified = dt.datetime.now(dt.timezone.utc)
            listed.append((path[len(prefix):], modified))
        return sorted(listed)

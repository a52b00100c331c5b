"""Issue 15, finding 8: `unlearn artifacts gc` removes version files that no version
references, once older than the grace period; never a referenced, young or foreign file."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid

from sqlalchemy import select

from app.audit.models import AuditEntry
from app.registry.gc import collect
from app.registry.models import ModelVersion
from app.registry.s3_store import S3ArtifactStore
from tests.conftest import make_ctx, make_settings
from tests.test_s3_store import s3_endpoint, s3_url  # noqa: F401 - fixtures

OLD = time.time() - 3 * 3600


def _orphan(ctx, old: bool, temporary: bool = False) -> str:
    name = uuid.uuid4().hex + ".safetensors"
    key = f"mnist-cnn/.tmp-{uuid.uuid4().hex}-{name}" if temporary else f"mnist-cnn/{name}"
    path = ctx.store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights of a version never published")
    if old:
        os.utime(path, (OLD, OLD))
    return key


def test_gc_removes_only_old_unreferenced_version_files(tmp_path, feature_cache_dir,
                                                         small_data, trained_state):
    ctx = make_ctx(make_settings(tmp_path, f"sqlite:///{tmp_path / 'u.db'}",
                                 feature_cache_dir), small_data, trained_state)
    with ctx.db.session() as session:
        published = session.scalar(select(ModelVersion.artifact_path))
    os.utime(ctx.store.root / published, (OLD, OLD))  # old, but referenced
    old_orphan, old_temporary = _orphan(ctx, True), _orphan(ctx, True, temporary=True)
    young_orphan = _orphan(ctx, False)
    foreign = ctx.store.root / "base" / "mnist-cnn-base.safetensors"  # not ours to judge
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"shipped weights")
    os.utime(foreign, (OLD, OLD))

    planned = collect(ctx, 1.0, "test", dry_run=True)
    assert sorted(planned.removed) == sorted([old_orphan, old_temporary])
    assert planned.too_young == [young_orphan]
    assert (ctx.store.root / old_orphan).exists()  # a dry run removes nothing

    done = collect(ctx, 1.0, "test")
    assert sorted(done.removed) == sorted([old_orphan, old_temporary])
    assert not (ctx.store.root / old_orphan).exists()
    assert not (ctx.store.root / old_temporary).exists()
    for kept in (published, young_orphan):
        assert (ctx.store.root / kept).exists()
    assert foreign.exists()
    with ctx.db.session() as session:
        entry = session.scalars(select(AuditEntry)
                                .where(AuditEntry.action == "artifacts.collected")).one()
    assert sorted(entry.details["removed"]) == sorted(done.removed)
    assert collect(ctx, 1.0, "test").removed == []  # nothing left, nothing audited
    ctx.close()


def test_s3_listing_gives_modification_times(s3_url, s3_endpoint):  # noqa: F811
    store = S3ArtifactStore(s3_url, endpoint_url=s3_endpoint)
    key = f"mnist-cnn/{uuid.uuid4().hex}.safetensors"
    store.put(key, b"x")
    [(listed, modified)] = store.listing()
    assert listed == key
    assert abs(modified - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(hours=1)

"""Audit checkpoints in S3 (moto's standalone server, spoken to through fsspec/s3fs): one
object per checkpoint, the latest found by name, each under COMPLIANCE object lock."""

from __future__ import annotations

import uuid

import pytest

from app.audit.chain import ChainHead
from app.audit.checkpoints import S3CheckpointStore, check_signature, sign_head
from app.core.signing import load_or_create_signer
from app.db.base import utcnow
from tests.test_s3_store import s3_endpoint  # noqa: F401  (the moto server fixture)


@pytest.fixture
def locked_bucket(s3_endpoint, monkeypatch):  # noqa: F811
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"checkpoints-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return client, bucket, s3_endpoint


def test_checkpoints_are_locked_objects_and_the_latest_is_found(locked_bucket, tmp_path):
    client, bucket, endpoint = locked_bucket
    signer = load_or_create_signer(tmp_path / "key.pem")
    store = S3CheckpointStore(f"s3://{bucket}/audit", endpoint, retain_days=30)
    assert store.latest() is None
    for seq in (3, 12, 7):  # names sort by seq, not by writing order
        store.append(sign_head(signer, ChainHead(seq, f"{seq:064x}"), utcnow()))
    latest = store.latest()
    assert latest["checkpoint"]["seq"] == 12
    assert check_signature(latest, signer.public_key)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 3 and all(key.startswith("audit/") for key in keys)
    head = client.head_object(Bucket=bucket, Key=keys[0])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > utcnow()

"""The store's S3 tests' shared parts: the moto server as the S3 endpoint of the whole standard chain, and
what a bucket holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def moto_bucket(moto_server: str, bucket: str) -> Iterator[Any]:
    """A boto3 S3 client on ``moto_server`` with ``bucket`` made, while ``AWS_ENDPOINT_URL`` points the
    standard chain (and child processes, which inherit the environment) at the server."""
    import boto3
    import s3fs

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", moto_server)
        s3fs.S3FileSystem.clear_instance_cache()  # no filesystem made before the endpoint was set
        client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield client
        s3fs.S3FileSystem.clear_instance_cache()


def keys_below(client: Any, bucket: str, prefix: str) -> list[str]:
    """Every object key of ``bucket`` below ``prefix/``, relative to it."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", []))

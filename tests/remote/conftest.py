"""A moto S3 server on loopback for the remote-store tests (skipped without moto/s3fs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("moto.server", reason="moto[server] is not installed")
pytest.importorskip("s3fs", reason="s3fs is not installed")

from atlasloader.testing.s3 import S3Server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server

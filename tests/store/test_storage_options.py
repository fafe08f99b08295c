"""fsspec options for object stores: defaults added, the caller's choices kept and not mutated."""

from __future__ import annotations

from atlasloader.store.open import S3_POOL_CONNECTIONS, _storage_options


def test_s3_pool_matches_the_fetcher_concurrency_by_default() -> None:
    opts = _storage_options("s3://bucket/atlas.zarr", None)
    assert opts is not None
    assert opts["config_kwargs"]["max_pool_connections"] == S3_POOL_CONNECTIONS


def test_callers_options_are_kept_and_not_mutated(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    given = {"config_kwargs": {"max_pool_connections": 5}, "client_kwargs": {"region_name": "x"}}
    opts = _storage_options("s3://bucket/atlas.zarr", given)
    assert opts is not None
    assert opts["config_kwargs"] == {"max_pool_connections": 5}
    assert opts["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:9", "region_name": "x"}
    assert given == {
        "config_kwargs": {"max_pool_connections": 5},
        "client_kwargs": {"region_name": "x"},
    }


def test_local_paths_and_other_schemes_get_no_s3_options() -> None:
    assert _storage_options("/data/atlas.zarr", None) is None
    assert _storage_options("file:///data/atlas.zarr", None) is None
    assert _storage_options("gs://bucket/atlas.zarr", {"token": "anon"}) == {"token": "anon"}

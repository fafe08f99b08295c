"""Cases: chunk and shard files of X and of obs columns truncated, garbled or deleted."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable
from pathlib import Path

from ... import errors as E
from .actions import (
    _PRE,
    _SETUP,
    _api_obs_names,
    _api_preprocess,
    _api_setup,
    _cli_preprocess,
    _cli_setup,
)
from .build import _copy, _then
from .case import STORE, Case


def _file(rel: str, edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        edit(base / STORE / rel)

    return build


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    """Overwrite the start of a chunk (its codec header; a shard's first inner chunk)."""
    data = bytearray(path.read_bytes())
    data[:16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def _index_past_end(path: Path) -> None:
    """Point the first inner chunk of a shard (index at the end, crc32c) past the file."""
    import google_crc32c

    data = bytearray(path.read_bytes())
    n = 2  # inner chunks per shard of the "sharded" template
    index_len = 16 * n
    start = len(data) - index_len - 4
    index = bytearray(data[start : start + index_len])
    _, nbytes = struct.unpack_from("<QQ", index, 0)
    struct.pack_into("<QQ", index, 0, len(data) + 4096, nbytes)
    data[start : start + index_len] = index
    data[start + index_len :] = struct.pack("<I", google_crc32c.value(bytes(index)))
    path.write_bytes(bytes(data))


def _delete(rel: str) -> Callable[[Path], None]:
    def build(base: Path) -> None:
        target = base / STORE / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return build


_CORRUPT = r"(chunk|shard|c/\d)"

CASES: list[Case] = [
    # --- chunk and shard files of X and of obs columns --------------------------------------
    Case("x_data_shard_truncated", "chunks",
         _then(_copy("sharded"), _file("X/data/c/1", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_data_shard_corrupted", "chunks", _then(_copy("sharded"), _file("X/data/c/0", _garble)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_indices_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("X/indices/c/1", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/indices.*" + _CORRUPT, _PRE),
    Case("x_indices_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("X/indices/c/2", _garble)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/indices.*" + _CORRUPT, _PRE),
    Case("x_indptr_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("X/indptr/c/0", _garble)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"X/indptr", _SETUP),
    Case("x_dense_chunk_truncated", "chunks", _then(_copy("dense"), _file("X/c/1/0", _truncate)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"\bX\b.*" + _CORRUPT, _PRE),
    Case("x_shard_index_past_file", "chunks",
         _then(_copy("sharded"), _file("X/data/c/1", _index_past_end)),
         _api_preprocess, _cli_preprocess, E.CorruptChunkError, r"X/data.*" + _CORRUPT, _PRE),
    Case("x_indptr_chunk_missing", "chunks", _then(_copy("chunked"), _delete("X/indptr/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"indptr", _SETUP),
    Case("x_indices_shard_missing", "chunks", _then(_copy("sharded"), _delete("X/indices/c/1")),
         _api_preprocess, _cli_preprocess, None, "", _PRE, cli_exit=0,
         note="a missing chunk reads as the fill value (column 0) by the Zarr spec; Zarr itself "
              "omits chunks that hold only it, so atlasloader validate does not report it "
              "either (a gap: detecting it needs a per-row sortedness check of indices)"),
    Case("x_data_shard_missing", "chunks", _then(_copy("sharded"), _delete("X/data/c/1")),
         _api_preprocess, _cli_preprocess, None, "", _PRE, cli_exit=0,
         note="a missing chunk is the fill value (0) by the Zarr spec, which omits all-zero "
              "chunks; anndata.read_zarr reads the same zeros"),
    Case("obs_codes_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("obs/batch/codes/c/0", _truncate)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"obs/batch/codes", _SETUP),
    Case("obs_codes_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/labels/codes/c/0", _garble)),
         _api_setup(labels_key="labels"), _cli_setup("--labels-key", "labels"),
         E.CorruptChunkError, r"obs/labels/codes",
         "SCVI.setup_anndata(store, labels_key='labels')"),
    Case("obs_categories_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/batch/categories/c/0", _garble)),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.CorruptChunkError,
         r"obs/batch/categories", _SETUP),
    Case("obs_numeric_chunk_truncated", "chunks",
         _then(_copy("chunked"), _file("obs/n_counts/c/0", _truncate)),
         _api_setup(continuous_covariate_keys=["n_counts"]),
         _cli_setup("--continuous-covariate-keys", "n_counts"), E.CorruptChunkError,
         r"obs/n_counts", "SCVI.setup_anndata(store, continuous_covariate_keys=['n_counts'])"),
    Case("obs_index_chunk_corrupted", "chunks",
         _then(_copy("chunked"), _file("obs/_index/c/0", _garble)),
         _api_obs_names, None, E.CorruptChunkError, r"obs/_index", "read_lazy(store).obs_names"),
    Case("obs_codes_chunk_missing", "chunks",
         _then(_copy("chunked"), _delete("obs/batch/codes/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), None, "", _SETUP,
         cli_exit=0,
         note="Zarr does not write a chunk holding only the fill value (codes 0), so a missing "
              "codes chunk is the first category by the Zarr spec, as anndata.read_zarr reads it"),
    Case("obs_categories_chunk_missing", "chunks",
         _then(_copy("chunked"), _delete("obs/batch/categories/c/0")),
         _api_setup(batch_key="batch"), _cli_setup("--batch-key", "batch"), E.InvalidDataError,
         r"batch.*(categor|empty)", _SETUP),
]  # fmt: skip

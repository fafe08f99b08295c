"""Where an array's chunks are and how to decode them: the :class:`_Layout` of a direct read.

:func:`_layout` reads an array's metadata once and either returns everything a direct read needs
(the chunk or shard keys, the chunk shape, the decoders, the shard index's size and place) or
raises :class:`~.codecs._Unsupported` saying why zarr-python must read it instead. Direct reads
need a :class:`zarr.storage.LocalStore` or a remote ``FsspecStore`` / ``ObjectStore`` (no
wrappers), a little-endian host and dtype, chunks along the first axis only (every chunk spans
all the trailing axes), and either Zarr format 3 with a regular grid, a ``bytes`` codec and the
codecs of :mod:`.codecs` (optionally inside ``sharding_indexed`` with a ``bytes`` [+ ``crc32c``]
index at either end, inner chunks tiling the shards by rows), or Zarr format 2 with no filters,
C order and a compressor of :mod:`.codecs`. The chunk keys are checked against zarr's own
encoder, so an encoding we misread falls back instead of reading the wrong files.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from .codecs import Decoder, _bytes_codec_ok, _Unsupported, _v2_decoder, _v3_decoder
from .remote import is_remote_store

# Sentinel of the sharding index for a chunk that was never written (spec: both fields 2^64-1).
_MISSING = np.uint64(2**64 - 1)
# Dtype kinds whose bytes we can reinterpret directly (bool, ints, unsigned, floats, complex).
_DTYPE_KINDS = "biufc"


@dataclass(frozen=True)
class _Layout:
    """Everything needed to find and decode a chunk, fixed at construction."""

    directory: str  # the array's directory on disk; on a remote store its key prefix
    remote: bool  # chunks are objects of a remote store, fetched through reading.remote
    key_prefix: str  # chunk key of row-chunk i = key_prefix + str(i) + key_suffix
    key_suffix: str
    chunk_rows: int  # rows per (inner) chunk
    chunk_shape: tuple[int, ...]  # decoded (inner) chunk shape, padded edges included
    chunk_nbytes: int
    # Decoders in decoding order, each with the size of its output when known in advance (only
    # for the last one, the decoded chunk).
    decode_steps: tuple[tuple[Decoder, int | None], ...]

    shard_chunks: int  # inner chunks per shard file; 0 when the array is not sharded
    index_at_end: bool
    index_nbytes: int
    index_crc: bool

    @property
    def raw(self) -> bool:
        """Chunks are stored uncompressed (``bytes`` codec only): rows can be read in place."""
        return not self.decode_steps

    def path(self, n: int) -> str:
        """Local file of row-chunk (or shard) ``n``."""
        # The directory is absolute and normalised (``_layout``): joined by hand, per read.
        return f"{self.directory}{os.sep}{self.key_prefix}{n}{self.key_suffix}"

    def key(self, n: int) -> str:
        """Object key of row-chunk (or shard) ``n`` in a remote store."""
        name = f"{self.key_prefix}{n}{self.key_suffix}"
        return f"{self.directory}/{name}" if self.directory else name


def _spec(obj: Any) -> dict[str, Any]:
    """JSON form of a zarr metadata object (codec, grid, key encoding), as the spec writes it."""
    return dict(obj.to_dict())


def _chunk_key_parts(array: zarr.Array, ndim: int, n_keys: int) -> tuple[str, str]:
    """Prefix and suffix around the row-chunk (or shard) number in a key, checked against zarr."""
    meta: Any = array.metadata  # v2 and v3 metadata classes share no typed interface
    if meta.zarr_format == 3:
        enc = _spec(meta.chunk_key_encoding)
        name = enc.get("name")
        sep = (enc.get("configuration") or {}).get("separator", "/" if name == "default" else ".")
        if name == "default":
            prefix = "c" + sep
        elif name == "v2":
            prefix = ""
        else:
            raise _Unsupported(f"chunk key encoding {name!r}")
    else:
        sep = getattr(meta, "dimension_separator", None) or "."
        prefix = ""
    suffix = (sep + "0") * (ndim - 1)
    # Compare with zarr's own encoder on the first and last chunk so an encoding we misread falls
    # back instead of reading the wrong files.
    for i in {0, max(0, n_keys - 1)}:
        ours = prefix + str(i) + suffix
        theirs = meta.encode_chunk_key((i,) + (0,) * (ndim - 1))
        if ours != theirs:
            raise _Unsupported(f"chunk key {theirs!r} does not match the expected {ours!r}")
    return prefix, suffix


def _trailing_in_one_chunk(shape: tuple[int, ...], chunks: tuple[int, ...], what: str) -> None:
    for s, c in zip(shape[1:], chunks[1:]):
        if s > c:
            raise _Unsupported(f"{what} split the trailing axes ({chunks} for shape {shape})")


def _layout(array: zarr.Array) -> _Layout:
    store = array.store
    remote = is_remote_store(store)
    if type(store) is not LocalStore and not remote:
        # Wrappers (logging, latency, caching...) may change the bytes or count the calls.
        raise _Unsupported(f"store {type(store).__name__} is not a local or remote object store")
    if sys.byteorder != "little":
        raise _Unsupported("big-endian host")
    shape = tuple(int(s) for s in array.shape)
    if len(shape) == 0 or any(s == 0 for s in shape[1:]):
        raise _Unsupported(f"shape {shape}")
    dtype = np.dtype(array.dtype)
    if dtype.kind not in _DTYPE_KINDS or dtype.byteorder == ">" or dtype.hasobject:
        raise _Unsupported(f"dtype {dtype}")
    parts = [p for p in array.path.split("/") if p]
    if remote:
        directory = "/".join(parts)
    else:
        # Absolute, so a later change of working directory cannot redirect reads.
        directory = os.path.abspath(os.path.join(str(store.root), *parts))
    meta: Any = array.metadata

    shard_chunks, index_at_end, index_nbytes, index_crc = 0, True, 0, False
    if meta.zarr_format == 3:
        if getattr(meta, "storage_transformers", ()):
            raise _Unsupported("storage transformers")
        grid = _spec(meta.chunk_grid)
        if grid.get("name") != "regular":
            raise _Unsupported(f"chunk grid {grid.get('name')!r}")
        outer = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
        codecs = [_spec(c) for c in meta.codecs]
        if codecs and codecs[0].get("name") == "sharding_indexed":
            if len(codecs) != 1:
                raise _Unsupported("codecs after the sharding codec")
            cfg = codecs[0]["configuration"]
            inner = tuple(int(c) for c in cfg["chunk_shape"])
            if inner[1:] != outer[1:] or outer[0] % inner[0]:
                raise _Unsupported(f"inner chunks {inner} do not tile shards {outer} by rows")
            index_codecs = [dict(c) for c in cfg.get("index_codecs", ())]
            names = [c.get("name") for c in index_codecs]
            if names not in (["bytes"], ["bytes", "crc32c"]):
                raise _Unsupported(f"shard index codecs {names}")
            _bytes_codec_ok(index_codecs[0], np.dtype("u8"))
            shard_chunks = outer[0] // inner[0]
            index_crc = len(names) == 2
            index_nbytes = 16 * shard_chunks + (4 if index_crc else 0)
            index_at_end = cfg.get("index_location", "end") == "end"
            codecs = [dict(c) for c in cfg["codecs"]]
            chunk_shape = inner
        else:
            chunk_shape = outer
        if not codecs:
            raise _Unsupported("no codecs")
        _bytes_codec_ok(codecs[0], dtype)
        decoders = [_v3_decoder(c) for c in codecs[1:]][::-1]
    else:
        chunk_shape = tuple(int(c) for c in meta.chunks)
        if meta.filters:
            raise _Unsupported("v2 filters")
        if meta.order != "C" and len(shape) > 1:
            raise _Unsupported(f"v2 order {meta.order!r}")
        decoders = [] if meta.compressor is None else [_v2_decoder(meta.compressor)]
    _trailing_in_one_chunk(shape, chunk_shape, "chunks")
    n_row_chunks = max(1, math.ceil(shape[0] / chunk_shape[0]))
    n_files = math.ceil(n_row_chunks / shard_chunks) if shard_chunks else n_row_chunks
    prefix, suffix = _chunk_key_parts(array, len(shape), n_files)
    chunk_nbytes = math.prod(chunk_shape) * dtype.itemsize
    return _Layout(
        directory=directory,
        remote=remote,
        key_prefix=prefix,
        key_suffix=suffix,
        chunk_rows=chunk_shape[0],
        chunk_shape=chunk_shape,
        chunk_nbytes=chunk_nbytes,
        decode_steps=tuple(
            (d, chunk_nbytes if i == len(decoders) - 1 else None) for i, d in enumerate(decoders)
        ),
        shard_chunks=shard_chunks,
        index_at_end=index_at_end,
        index_nbytes=index_nbytes,
        index_crc=index_crc,
    )


def _shard_groups(uniq: np.ndarray, n: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Inner chunk numbers of the sorted chunks ``uniq``, and their runs ``(shard, start, end)``."""
    shard = uniq // n
    inner = uniq - shard * n
    bounds = np.flatnonzero(np.diff(shard)) + 1
    starts = np.concatenate(([0], bounds)).tolist()
    ends = np.concatenate((bounds, [uniq.size])).tolist()
    return inner, [(int(shard[a]), a, b) for a, b in zip(starts, ends)]

"""The decoders of the direct chunk reads: encoded chunk bytes to decoded bytes, sizes checked.

Zarr format 3 arrays may be read directly when their ``bytes`` codec is little endian (or the
dtype has one byte) and any codecs after it are ``blosc``, ``zstd``, ``gzip`` or ``crc32c``; Zarr
format 2 arrays when their compressor is Blosc, Zstd, GZip, Zlib or none. Each decoder is told the
decoded size when it is known in advance, so a damaged header that claims another size is
rejected before anything is allocated (and before c-blosc, which trusts its header, reads past the
buffer). A codec we do not decode raises :class:`_Unsupported`: the reader then falls back to
zarr-python, keeping the message as its ``fallback_reason``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numcodecs
import numcodecs.blosc
import numcodecs.zstd
import numpy as np

try:  # numcodecs only defines CRC32C when a crc32c implementation is installed.
    from numcodecs.checksum32 import CRC32C as _CRC32C

    _crc32c: Any = _CRC32C()
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c = None

# numcodecs compressors of Zarr v2 arrays that are plain bytes -> bytes transforms.
_V2_COMPRESSORS = frozenset({"blosc", "zstd", "gzip", "zlib"})
_ZSTD_MAGIC = 0xFD2FB528
# Decoded and compressed sizes in a blosc header (bytes 4-7 and 12-15, little endian).
_BLOSC_SIZES = struct.Struct("<4xI4xI")
_blosc_decompress = numcodecs.blosc.decompress

# A decoder maps encoded bytes to decoded bytes; ``expected`` is the decoded size when it is known
# (only for the last decoder applied), so headers claiming another size are rejected before any
# allocation happens.
Decoder = Callable[[Any, "int | None"], Any]


class _Unsupported(Exception):
    """The array cannot be read directly; the message says why (kept as ``fallback_reason``)."""


def _decode_blosc(buf: Any, expected: int | None) -> Any:
    # c-blosc's decompressor trusts the compressed size in the header (it is never told the
    # buffer's length), so a damaged header could make it read past the buffer: check it first.
    if type(buf) is not bytes and type(buf) is not memoryview:
        # Outputs of other decoders (arrays); bytes and our slices of them are flat already.
        buf = memoryview(buf).cast("B")
    size = len(buf)
    if size < 16:
        raise ValueError(f"blosc buffer of {size} bytes is shorter than its 16-byte header")
    nbytes, cbytes = _BLOSC_SIZES.unpack_from(buf)
    if cbytes != size:
        raise ValueError(f"blosc header says {cbytes} compressed bytes, buffer has {size}")
    if expected is not None and nbytes != expected:
        raise ValueError(f"blosc header says {nbytes} decoded bytes, expected {expected}")
    return _blosc_decompress(buf)


def _zstd_content_size(mv: memoryview) -> int | None:
    """Decoded size declared in a zstd frame header, or None when the frame omits it."""
    if len(mv) < 5 or int.from_bytes(mv[0:4], "little") != _ZSTD_MAGIC:
        raise ValueError("not a zstd frame (bad magic number)")
    fhd = mv[4]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    size = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if size == 0:
        return None
    if len(mv) < pos + size:
        raise ValueError("truncated zstd frame header")
    value = int.from_bytes(mv[pos : pos + size], "little")
    return value + 256 if size == 2 else value


def _decode_zstd(buf: Any, expected: int | None) -> Any:
    mv = memoryview(buf).cast("B")
    if expected is not None:
        declared = _zstd_content_size(mv)
        if declared is not None and declared != expected:
            raise ValueError(f"zstd frame declares {declared} decoded bytes, expected {expected}")
    return numcodecs.zstd.decompress(mv)


def _decode_crc32c(buf: Any, expected: int | None) -> Any:
    mv = memoryview(buf).cast("B")
    if len(mv) < 4:
        raise ValueError("buffer too short to hold a crc32c checksum")
    return _crc32c.decode(mv) if _crc32c is not None else mv[:-4]


def _numcodecs_decoder(codec: Any) -> Decoder:
    def decode(buf: Any, expected: int | None) -> Any:
        return codec.decode(buf)

    return decode


def _v3_decoder(spec: dict[str, Any]) -> Decoder:
    name = spec["name"]
    cfg = spec.get("configuration") or {}
    if name == "blosc":
        return _decode_blosc
    if name == "zstd":
        return _decode_zstd
    if name == "gzip":
        return _numcodecs_decoder(numcodecs.GZip(level=int(cfg.get("level", 5))))
    if name == "crc32c":
        return _decode_crc32c
    raise _Unsupported(f"codec {name!r} is not decoded directly")


def _v2_decoder(codec: Any) -> Decoder:
    codec_id = getattr(codec, "codec_id", None)
    if codec_id not in _V2_COMPRESSORS:
        raise _Unsupported(f"v2 compressor {codec_id!r} is not decoded directly")
    if codec_id == "blosc":
        return _decode_blosc
    if codec_id == "zstd":
        return _decode_zstd
    return _numcodecs_decoder(codec)


def _bytes_codec_ok(spec: dict[str, Any], dtype: np.dtype) -> None:
    if spec.get("name") != "bytes":
        raise _Unsupported(f"codec {spec.get('name')!r} where the bytes codec was expected")
    endian = (spec.get("configuration") or {}).get("endian")
    if endian != "little" and not (endian is None and dtype.itemsize == 1):
        raise _Unsupported(f"bytes codec with endian={endian!r}")

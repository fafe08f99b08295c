"""Chunk reading: row ranges of Zarr arrays, decoded directly, through one interface.

The room owns :class:`~.chunks.ChunkReader` (:mod:`.chunks`: ``read``, ``read_many``, ``fast``,
``fallback_reason``, pickling, the local reader over ``os.pread`` and the fallback to zarr-python
for arrays it cannot read directly), the remote reader (:mod:`.remote_reads` plans a read as
ranged GETs, :mod:`.remote` fetches them concurrently with time limits and retries), the layout of
an array's chunks and shards (:mod:`.layout`) and the decoders (:mod:`.codecs`). Its modules
import only :mod:`atlasloader.errors` from the package, plus numpy, zarr and numcodecs (fsspec and
obstore lazily): no other room, so the store and the loaders can build on it.
"""

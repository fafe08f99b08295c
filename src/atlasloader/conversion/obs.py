"""Concatenate the inputs' ``obs`` (and other small per-cell elements) for :func:`convert`.

``obs`` is streamed: every column (and the index) is read and written in windows of rows
(:data:`.windows.ROWS`), so memory does not grow with the number of cells beyond 8 bytes per
cell while the cell names are checked for collisions (:mod:`.names`); a shuffled store's rows
go through bucket files in the partial store (:mod:`.windows`). The union of the columns is
kept, in order of first appearance (:mod:`.columns` unites them):

- a column missing in some inputs is filled with NaN (numbers, stored as float64), NA
  (booleans, stored as a nullable boolean) or a missing category (categoricals and strings:
  Zarr v3 string arrays cannot hold a missing value, so such a string column is stored as a
  categorical);
- categoricals take the union of their categories (sorted naturally, as ``anndata.concat``
  does); a column categorical in one input and string in another becomes categorical; ordered
  categoricals stay ordered only if every input has the same categories;
- numbers of different types take their common type; anything else (numbers in one input,
  strings in another) raises :class:`~atlasloader.errors.InvalidDataError` naming the column.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ColumnExistsError
from .columns import InputColumn, Output, create_array, plan_column, single
from .names import Names, check_names, index_key
from .tasks import pieces_of
from .windows import Parts, RowShuffle, fill

if TYPE_CHECKING:
    from .source import Source
    from .state import Spilled

SOURCE_KEY = "source_file"  # default obs column naming each cell's input
POSITION_KEY = "original_position"  # obs column of a shuffled store: each cell's input position
_ELEM_KWARGS = {"shards": None}
_DATAFRAME_ATTRS = {"encoding-type": "dataframe", "encoding-version": "0.2.0"}


def _attr_list(attrs: Any, name: str) -> list[str]:
    value = attrs.get(name, [])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


def obs_columns(source: Source) -> list[str]:
    return _attr_list(source.node("obs").attrs, "column-order")


def n_obs(source: Source) -> int:
    obs = source.node("obs")
    return int(obs[index_key(obs)].shape[0])


def check_new_columns(
    sources: list[Source], paths: list[str], source_key: str | None, shuffle: bool
) -> None:
    """Refuse to overwrite a user's obs column with one that convert adds."""
    for source, path in zip(sources, paths):
        columns = obs_columns(source)
        if source_key is not None and source_key in columns:
            msg = (
                f"adata.obs[{source_key!r}] already exists in {path!r}; convert records each "
                "cell's input there and never overwrites a column. Pass "
                "source_key='another_name', or source_key=None to not record the inputs"
            )
            raise ColumnExistsError(msg)
        if shuffle and POSITION_KEY in columns:
            msg = (
                f"adata.obs[{POSITION_KEY!r}] already exists in {path!r}; convert(shuffle=True) "
                "records each cell's position before shuffling there and never overwrites a "
                "column. Rename or drop that column in the input (it is there if the input was "
                "itself converted with shuffle=True)"
            )
            raise ColumnExistsError(msg)


def write_obs(
    root: Any,
    sources: list[Source],
    paths: list[str],
    shuffle: tuple[Spilled, Spilled] | None,
    source_key: str | None,
    tmp: str,
) -> Names:
    """Write ``obs`` (index, columns union, ``source_key``, the input positions), streamed.

    ``shuffle`` is ``(perm, inverse)``: output row ``i`` holds input row ``perm[i]``. Bucket
    files of the shuffle go under ``tmp`` (inside the partial store), removed at the end.
    Returns the cell names as a :class:`~.names.Names` reader, not in memory: their
    :meth:`~.names.Names.index` reads them all, for the rare element that needs them.
    """
    sizes = [n_obs(s) for s in sources]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = int(offsets[-1])
    names = check_names(sources, paths, sizes)
    rows = None if shuffle is None else RowShuffle(tmp, *shuffle)
    try:
        group = root.create_group(
            "obs", attributes={"column-order": [], "_index": names.key, **_DATAFRAME_ATTRS}
        )
        index = create_array(group, names.key, n, None)
        fill([index], _pieces(offsets, lambda k, a, b: (names.read(k, a, b),)), n, rows)
        columns: dict[str, None] = {}
        for source in sources:
            columns.update(dict.fromkeys(obs_columns(source)))
        for col in columns:
            _write_column(group, col, sources, paths, sizes, offsets, shuffle, rows)
        order = list(columns)
        if source_key is not None:
            cats = pd.Index(paths, dtype=object)
            out = Output("categorical", categories=cats)
            arrays = out.create(group, source_key, n)
            fill(arrays, lambda a, b: _source_codes(offsets, out, shuffle, a, b), n, None)
            order.append(source_key)
        if shuffle is not None:
            arrays = [create_array(group, POSITION_KEY, n, np.int64)]
            fill(arrays, lambda a, b: (shuffle[0].read(a, b),), n, None)
            order.append(POSITION_KEY)
        group.attrs["column-order"] = order
    finally:
        if rows is not None:
            rows.remove()
    return names


def _pieces(offsets: np.ndarray, read: Callable[[int, int, int], Parts]) -> Any:
    """Global input rows ``a:b`` from ``read(k, a, b)`` of the inputs holding them."""

    def produce(a: int, b: int) -> Parts:
        got = [read(k, ra, rb) for k, ra, rb in pieces_of(offsets, a, b)]
        if not got:
            got = [read(0, 0, 0)]
        return tuple(np.concatenate(p) for p in zip(*got))

    return produce


def _write_column(
    group: Any, col: str, sources: list[Source], paths: list[str], sizes: list[int],
    offsets: np.ndarray, shuffle: tuple[Spilled, Spilled] | None, rows: RowShuffle | None,
) -> None:  # fmt: skip
    """Plan one column from the inputs' encodings, create it, then fill it window by window."""
    inputs = [InputColumn(s, col) if col in obs_columns(s) else None for s in sources]
    first = inputs[0]
    if len(inputs) == 1 and first is not None:
        out = single(first)
    else:
        out = plan_column(col, inputs, sizes, paths)
    n = int(offsets[-1])
    if out is None:  # an encoding not read in windows: copied whole, as anndata reads it
        from ..store.elements import write_elem

        assert first is not None
        perm = None if shuffle is None else np.asarray(shuffle[0].mapped())
        write_elem(group, col, take(first.read(0, n), perm), dataset_kwargs=_ELEM_KWARGS)
        return
    arrays = out.create(group, col, n)

    def read(k: int, a: int, b: int) -> Parts:
        column = inputs[k]
        return out.convert(None if column is None else column.read(a, b), b - a)

    fill(arrays, _pieces(offsets, read), n, rows)


def _source_codes(
    offsets: np.ndarray, out: Output, shuffle: tuple[Spilled, Spilled] | None, a: int, b: int
) -> Parts:
    """Output rows ``a:b`` of ``source_key``: each cell's input position."""
    rows = np.arange(a, b, dtype=np.int64) if shuffle is None else shuffle[0].read(a, b)
    inputs = np.searchsorted(offsets, rows, side="right") - 1
    return (inputs.astype(out.codes_dtype),)


def take(values: Any, perm: np.ndarray | None) -> Any:
    """Rows ``perm`` of a column, array, sparse matrix or dataframe (all of it if None)."""
    if perm is None:
        return values
    if isinstance(values, pd.DataFrame):
        return values.iloc[perm]
    if isinstance(values, np.ndarray) or hasattr(values, "tocsr"):
        return values[perm]
    return values.take(perm)


# --- other per-cell elements --------------------------------------------------------------------
def concat_rows(values: list[Any], where: str, names: Names, perm: np.ndarray | None) -> Any | None:
    """Concatenate (then permute) a small per-cell element; None (with a warning) if it can't.

    ``names`` reads the output's cell names in input order: only a dataframe of several
    inputs (whose index they become) reads them, all at once.
    """
    if len(values) == 1:
        return take(values[0], perm)
    if all(isinstance(v, pd.DataFrame) for v in values):
        if any(list(v.columns) != list(values[0].columns) for v in values):
            return _drop(where, "its columns differ between inputs")
        out: Any = pd.concat(values, ignore_index=True)
        out.index = names.index()
    elif all(isinstance(v, np.ndarray) for v in values):
        if len({v.shape[1:] for v in values}) > 1:
            return _drop(where, "its shapes differ between inputs")
        out = np.concatenate(values)
    else:
        return _drop(where, "only dataframes and arrays are concatenated")
    return take(out, perm)


def _drop(where: str, why: str) -> Any:
    warnings.warn(f"{where} is not converted: {why}", UserWarning, stacklevel=6)
    return None

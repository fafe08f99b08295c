"""Nothing taken from a store is executed: no pickle, eval or import on a read path.

The package is searched for the calls that would run code named by data, and a store crafted
to try (an obs column whose Zarr v2 metadata asks for the pickle codec, whose chunk holds a
pickle that would create a file) is opened, inspected and registered: each use raises a named
error and the file is never created. Registry JSON is decoded by a codec that builds only
numpy arrays and plain containers (tests/registry/test_codec.py).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import atlasloader
from atlasloader import AnnDataManager
from atlasloader.errors import AtlasLoaderError, InvalidDataError
from atlasloader.fields import CategoricalObsField

PACKAGE = Path(atlasloader.__file__).parent
# Calls that run code or resolve names from data. ``importlib.import_module`` is allowed only
# with the package's own constant module tables (lazy exports), checked below.
FORBIDDEN = re.compile(
    r"\bpickle\.loads?\((?!pickle\.dumps)|\beval\(|\bexec\(|__import__\(|allow_pickle\s*=\s*True"
    r"|\bnumcodecs\.Pickle\b|\bmarshal\.loads?\("
)
LAZY_IMPORTS = re.compile(r"import_module\((_LAZY|_EXPORTS)\[name\], __name__\)")


def test_no_code_from_data_anywhere_in_the_package() -> None:
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if FORBIDDEN.search(code):
                hits.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
            if "import_module(" in code and not LAZY_IMPORTS.search(code):
                hits.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert hits == []


class _Payload:
    """Unpickling this creates ``target``: proof that a pickle from the store was loaded."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.target,))


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "crafted.zarr"
    proof = tmp_path / "PWNED"
    obs = pd.DataFrame(
        {"batch": pd.Categorical(list("ab") * 10)}, index=[f"c{i}" for i in range(20)]
    )
    with ad.settings.override(zarr_write_format=2):
        ad.AnnData(np.ones((20, 3), np.float32), obs=obs).write_zarr(store)
    col = store / "obs" / "evil"
    col.mkdir()
    meta = {
        "zarr_format": 2, "shape": [20], "chunks": [20], "dtype": "|O", "compressor": None,
        "fill_value": None, "filters": [{"id": "pickle", "protocol": 4}], "order": "C",
    }  # fmt: skip
    (col / ".zarray").write_text(json.dumps(meta))
    (col / ".zattrs").write_text(
        json.dumps({"encoding-type": "array", "encoding-version": "0.2.0"})
    )
    (col / "0").write_bytes(pickle.dumps(np.array([_Payload(proof)] * 20, dtype=object)))
    attrs = json.loads((store / "obs" / ".zattrs").read_text())
    attrs["column-order"].append("evil")
    (store / "obs" / ".zattrs").write_text(json.dumps(attrs))
    (store / ".zmetadata").unlink()  # the column is read from its own (crafted) metadata
    return store, proof


def test_a_store_asking_for_pickle_is_refused_and_nothing_runs(crafted: tuple[Path, Path]) -> None:
    store, proof = crafted
    lazy = atlasloader.read_lazy(store, mode="r")
    assert "evil" in lazy.obs.columns  # listed, as anndata lists it
    with pytest.raises(InvalidDataError, match=r"obs/evil.*never pickled"):
        lazy.obs.column("evil")
    with pytest.raises(InvalidDataError, match=r"obs/evil"):
        lazy.obs["evil"]
    manager = AnnDataManager([CategoricalObsField("batch", "evil")])
    with pytest.raises(AtlasLoaderError, match=r"evil"):
        manager.register_fields(atlasloader.read_lazy(store))
    # The other columns still work.
    assert list(atlasloader.read_lazy(store, mode="r").obs["batch"].cat.categories) == ["a", "b"]
    assert not proof.exists()

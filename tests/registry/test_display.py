"""How a registry prints: a long categorical mapping is cut to both ends, never flooding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from atlasloader import AnnDataManager, read_lazy
from atlasloader.fields import CategoricalJointObsField, CategoricalObsField, LayerField
from atlasloader.registry.display import MAX_CATEGORIES_SHOWN, SHOWN_AT_EACH_END


def _adata(n_donors: int) -> ad.AnnData:
    n = 3 * n_donors  # three cells a donor: no "fewer than 3 cells" warning
    donors = [f"donor{i}" for i in range(n_donors)]
    obs = pd.DataFrame(
        {
            "donor": pd.Categorical.from_codes(np.arange(n) % n_donors, categories=donors),
            "site": pd.Categorical(np.where(np.arange(n) % 2 == 0, "a", "b")),
        },
        index=[f"c{i}" for i in range(n)],
    )
    return ad.AnnData(X=np.ones((n, 3), dtype=np.float32), obs=obs)


def _manager(adata: object, joint: bool = False) -> AnnDataManager:
    field = (
        CategoricalJointObsField("extra", ["site", "donor"])
        if joint
        else CategoricalObsField("batch", "donor")
    )
    manager = AnnDataManager(fields=[LayerField("X", None, is_count_data=True), field])
    manager.register_fields(adata)
    return manager


@pytest.mark.parametrize("backing", ["memory", "store"])
def test_long_mapping_prints_both_ends_and_how_many_are_left_out(
    backing: str,
    tmp_path: Path,
    render: Callable[..., str],
    rows_of: Callable[[str], list[list[str]]],
) -> None:
    n_donors = 1_000
    adata: object = _adata(n_donors)
    if backing == "store":
        adata.write_zarr(tmp_path / "a.zarr")  # type: ignore[attr-defined]
        adata = read_lazy(tmp_path / "a.zarr", mode="r+")
    manager = _manager(adata)
    rows = rows_of(render(manager))
    start = rows.index(["Source Location", "Categories", "scvi-tools Encoding"])
    body = rows[start + 1 :]
    ends = [*range(SHOWN_AT_EACH_END), *range(n_donors - SHOWN_AT_EACH_END, n_donors)]
    expected = [["adata.obs['donor']" if i == 0 else "", f"donor{i}", str(i)] for i in ends]
    left_out = n_donors - 2 * SHOWN_AT_EACH_END
    expected.insert(SHOWN_AT_EACH_END, ["", f"… {left_out:,} more", "…"])
    assert body == expected
    assert ["n_batch", str(n_donors)] in rows
    # The registry itself keeps every category.
    mapping = manager.get_state_registry("batch").categorical_mapping
    assert list(mapping) == [f"donor{i}" for i in range(n_donors)]


def test_joint_field_cuts_each_source_on_its_own(
    render: Callable[..., str], rows_of: Callable[[str], list[list[str]]]
) -> None:
    rows = rows_of(render(_manager(_adata(500), joint=True)))
    assert ["adata.obs['site']", "a", "0"] in rows
    assert ["", "b", "1"] in rows
    assert ["", f"… {500 - 2 * SHOWN_AT_EACH_END:,} more", "…"] in rows
    assert ["", "donor499", "499"] in rows
    assert not any(r[1:2] == ["donor250"] for r in rows)


def test_mapping_at_the_limit_prints_whole(
    render: Callable[..., str], rows_of: Callable[[str], list[list[str]]]
) -> None:
    rows = rows_of(render(_manager(_adata(MAX_CATEGORIES_SHOWN))))
    shown = [r for r in rows if len(r) == 3 and r[1].startswith("donor")]
    assert [r[1] for r in shown] == [f"donor{i}" for i in range(MAX_CATEGORIES_SHOWN)]
    assert not any("more" in r[1] for r in rows if len(r) == 3)

"""validate_store on stores with an interrupted write: leftovers are named, not damage."""

from __future__ import annotations

from pathlib import Path

from atlasloader.testing import crash


def test_validate_names_leftovers_of_an_interrupted_write_without_calling_them_damage(
    tmp_path: Path,
) -> None:
    import zarr

    from atlasloader.store.write import STAGING
    from atlasloader.validation.validate import check_store

    base = tmp_path / "w"
    base.mkdir()
    crash.OPS["setup"].prepare(base)
    store = base / "ref.zarr"
    assert check_store(store).ok
    root = zarr.open_group(store, mode="r+", use_consolidated=False)
    root.create_array(f"{STAGING}/deadbeef", shape=(3000,), dtype="int8")
    report = check_store(store)
    assert [p.where for p in report.problems] == [STAGING]
    assert report.problems[0].kind == "incomplete"
    assert "interrupted" in report.problems[0].what
    assert report.damaged == ()

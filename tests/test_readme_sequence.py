"""The README's "two .h5ad files to a trained model" command sequence runs as written.

The commands are read from the README itself (the first ``bash`` block of "Preparing an
atlas"), scaled down for CI, and run with bash in a temporary directory, with this interpreter's
``python`` and ``atlasloader`` first on ``PATH``: the README cannot drift from what works.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# README value -> CI value; each must occur, so a README edit cannot silently skip a step.
SMALLER = {
    "n_cells=20_000": "n_cells=1_500",
    "n_genes=2_000": "n_genes=300",
    "nnz_per_cell=100": "nnz_per_cell=40",
    "--n-top-genes 500": "--n-top-genes 60",
    "max_epochs=2": "max_epochs=1",
}


def readme_sequence() -> str:
    text = README.read_text()
    section = text[text.index("## Preparing an atlas") :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None, "no bash block in the README's 'Preparing an atlas' section"
    script = block.group(1)
    for old, new in SMALLER.items():
        assert old in script, f"the README sequence no longer contains {old!r}"
        script = script.replace(old, new)
    return script


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_readme_sequence_trains_from_two_h5ad_files(tmp_path: Path) -> None:
    script = readme_sequence()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    if not (Path(bindir) / "python").exists():  # pragma: no cover - unusual layouts
        pytest.skip("no `python` next to this interpreter")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The trained model printed its loss history: one finite loss per epoch.
    losses = re.findall(r"\[([-0-9.e+, ]+)\]\s*$", proc.stdout.strip())
    assert losses, proc.stdout[-2000:]
    values = [float(v) for v in losses[-1].split(",")]
    assert len(values) == 1
    assert all(v == v and abs(v) < float("inf") for v in values)
    # The store holds both inputs, the HVG columns and the registry.
    import anndata as ad

    back = ad.read_zarr(tmp_path / "atlas.zarr")
    assert back.n_obs == 3_000
    assert int(back.var["highly_variable"].sum()) == 60
    assert set(back.obs["source_file"].cat.categories) == {"in_0.h5ad", "in_1.h5ad"}

"""Persisted registrations: records round trip through a store, and a stateful model of setups.

``test_codec`` checks the JSON codec and ``Registry`` in memory; here the encoded state goes
through a real Zarr store (format 2 and 3) and back, and a hypothesis state machine drives a
store through sequences of registrations, transfers, re-registrations and edits of a registered
obs column, checking after every step that the store is still an AnnData store (for anndata
and atlasloader), that the persisted registry and codes equal what a registration in memory
computes from the same data, and that the user's own columns were never touched.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import atlasloader
from atlasloader import AnnDataManager
from atlasloader.errors import StaleRegistryError
from atlasloader.fields import CategoricalObsField, LayerField, NumericalObsField
from atlasloader.registry.model import Registry
from atlasloader.store import records

from .test_codec import assert_same, registries, states

pytestmark = [
    pytest.mark.filterwarnings("ignore:zarr v3 autosharding:UserWarning"),
    pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part"),
]

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- records through a store ------------------------------------------------------------------
@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> dict[int, zarr.Group]:
    root = tmp_path_factory.mktemp("records")
    return {
        fmt: zarr.open_group(root / f"v{fmt}.zarr", mode="w", zarr_format=fmt) for fmt in (2, 3)
    }


def _reopened(group: zarr.Group) -> zarr.Group:
    """The group opened again from disk (no attribute cache from the writer)."""
    return zarr.open_group(group.store_path.store, mode="r", use_consolidated=False)


@SETTINGS
@given(state=states, fmt=st.sampled_from([2, 3]), key=st.text(min_size=1, max_size=8))
def test_field_state_round_trips_through_the_store(
    groups: dict[int, zarr.Group], state: dict[str, Any], fmt: int, key: str
) -> None:
    group = groups[fmt]
    records.save_state(group, "spec", key, state, [], [])
    back = records.load_state(_reopened(group), "spec", [], [])
    assert back is not None
    assert_same(back, state)
    assert records.read_meta(_reopened(group))["fields"]["spec"]["registry_key"] == key


@SETTINGS
@given(registry=registries, fmt=st.sampled_from([2, 3]), name=st.text(min_size=1, max_size=8))
def test_registry_round_trips_through_the_store(
    groups: dict[int, zarr.Group], registry: Registry, fmt: int, name: str
) -> None:
    group = groups[fmt]
    records.save_registry(group, name, registry.to_json_dict())
    stored = records.load_registries(_reopened(group))[name]
    back = Registry.from_json_dict(stored)
    assert back.to_json() == registry.to_json()
    assert_same(back.to_dict(), registry.to_dict())


# --- a stateful model of registrations on a store ---------------------------------------------
N_OBS = 48
# Category names a user might have: unicode, spaces, numbers as text, "nan" as text.
NAMES = ["b0", "b1", "b2", "Zellen ü", " sp ace", "10", "nan"]
USER_COLUMNS = ("batch", "score")
FIELDS = (
    lambda: LayerField("X", None, is_count_data=True),
    lambda: CategoricalObsField("batch", "batch"),
    lambda: NumericalObsField("score", "score"),
)


def _fields() -> list[Any]:
    return [make() for make in FIELDS]


def _obs(rng: np.random.Generator, names: list[str], unused: list[str]) -> pd.DataFrame:
    values = rng.choice(names, size=N_OBS)
    cats = sorted({*values.tolist(), *unused})
    return pd.DataFrame(
        {
            "batch": pd.Categorical(values, categories=cats),
            "score": rng.normal(size=N_OBS).astype(np.float64),
        },
        index=pd.Index([f"cell_{i}" for i in range(N_OBS)]),
    )


def _write(path: Path, obs: pd.DataFrame, fmt: int, seed: int) -> None:
    x = np.random.default_rng(seed).poisson(1.0, size=(N_OBS, 6)).astype(np.float32)
    adata = ad.AnnData(x, obs=obs)
    with warnings.catch_warnings(), ad.settings.override(zarr_write_format=fmt):
        warnings.simplefilter("ignore", UserWarning)
        adata.write_zarr(path, chunks=(16, 6))


def _registered(manager: AnnDataManager, data: Any) -> AnnDataManager:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small categories, float counts
        manager.register_fields(data)
    return manager


def _user_obs(path: Path) -> pd.DataFrame:
    return ad.read_zarr(path).obs[list(USER_COLUMNS)]


def _plain(value: Any) -> Any:
    """Registry values comparable across backings (string arrays of any dtype as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _token(path: Path) -> str | None:
    return records.output_token(zarr.open_group(path, mode="r"), "obs", "_scvi_batch")


class Registrations(RuleBasedStateMachine):
    """A reference store and a query store, registered and edited in random orders.

    The model: ``truth`` is what the user's columns hold (as the test wrote them), ``edits``
    counts the changes of the reference's ``batch`` column and ``encoded`` the edit the codes on
    disk were computed from. Each manager remembers the edit it registered at and the codes'
    token it read; it is stale exactly when another registration re-encoded the codes since.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="registrations-"))
        self.ref = self.dir / "ref.zarr"
        self.query = self.dir / "query.zarr"
        self.truth: dict[Path, pd.DataFrame] = {}
        self.edits = 0
        self.encoded: int | None = None  # no codes on disk yet
        self.managers: list[AnnDataManager] = []
        self.seen: dict[int, tuple[int, str | None]] = {}  # id -> (edit registered at, token)
        self.latest: AnnDataManager | None = None  # the last to run register_fields
        self.rng = np.random.default_rng(0)

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize(fmt=st.sampled_from([2, 3]), seed=st.integers(0, 2**16))
    def write_stores(self, fmt: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        for path, names in ((self.ref, NAMES[:3]), (self.query, NAMES[1:5])):
            obs = _obs(self.rng, names, unused=[])
            _write(path, obs, fmt, seed)
            self.truth[path] = obs.copy()

    def _registered_now(self, manager: AnnDataManager, before: str | None) -> None:
        """Record a (re-)registration: codes reused if current, else re-encoded."""
        after = _token(self.ref)
        assert after is not None
        if self.encoded == self.edits:
            assert after == before, "codes of unchanged data were re-encoded"
        else:
            assert after != before, "codes of edited data were not re-encoded"
        self.encoded = self.edits
        self.seen[id(manager)] = (self.edits, after)
        self.latest = manager

    # --- rules ------------------------------------------------------------------------------
    @rule()
    def register(self) -> None:
        """A new registration of the reference (what every ``setup_anndata`` call does)."""
        before = _token(self.ref)
        manager = _registered(AnnDataManager(fields=_fields()), atlasloader.read_lazy(self.ref))
        self.managers.append(manager)
        self._registered_now(manager, before)

    @precondition(lambda self: bool(self.managers))
    @rule(data=st.data())
    def validate(self, data: st.DataObject) -> None:
        """``validate()`` (the loader calls it): re-registers a manager whose codes were
        re-encoded by another registration since, and leaves a current one alone."""
        manager = data.draw(st.sampled_from(self.managers), label="manager")
        before = _token(self.ref)
        stale = self.seen[id(manager)][1] != before
        if stale:
            with pytest.raises(StaleRegistryError, match="re-encoded"):
                manager.check_encodings()
        manager.validate()
        manager.check_encodings("after validate")
        if stale:
            self._registered_now(manager, before)
        else:
            # Current, or only the user's column changed since: validate() compares ownership
            # tokens (documented), not the inputs; a new registration fingerprints those.
            assert _token(self.ref) == before

    @rule(
        fraction=st.floats(0.05, 1.0),
        names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
        unused=st.lists(st.sampled_from(NAMES), max_size=2, unique=True),
    )
    def edit_batch_column(self, fraction: float, names: list[str], unused: list[str]) -> None:
        """The user relabels some cells of the registered column (rewritten on disk)."""
        old = self.truth[self.ref]["batch"]
        values = old.astype(object).to_numpy().copy()
        hit = self.rng.random(N_OBS) < fraction
        values[hit] = self.rng.choice(names, size=int(hit.sum()))
        new = pd.Categorical(values, categories=sorted({*values.tolist(), *unused}))
        group = zarr.open_group(self.ref, mode="r+", use_consolidated=False)
        ad.io.write_elem(group["obs"], "batch", new)
        zarr.consolidate_metadata(self.ref)
        same = list(new.categories) == list(old.cat.categories) and list(values) == list(
            old.astype(object)
        )
        self.truth[self.ref]["batch"] = new
        self.edits += 0 if same else 1

    @rule()
    def edit_score_column(self) -> None:
        """The user rescales the registered numerical column (its field persists no codes)."""
        new = self.truth[self.ref]["score"].to_numpy() * 2.0 + 1.0
        group = zarr.open_group(self.ref, mode="r+", use_consolidated=False)
        ad.io.write_elem(group["obs"], "score", new)
        zarr.consolidate_metadata(self.ref)
        self.truth[self.ref]["score"] = new

    @precondition(lambda self: self.latest is not None and self._current(self.latest))
    @rule()
    def transfer(self) -> None:
        """Map the query store onto the reference registry (new categories appended)."""
        assert self.latest is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            query = self.latest.transfer_fields(
                atlasloader.read_lazy(self.query), extend_categories=True
            )
        ref_map = self.latest.get_state_registry("batch")["categorical_mapping"].tolist()
        got = query.get_state_registry("batch")["categorical_mapping"].tolist()
        assert got[: len(ref_map)] == ref_map
        # The same transfer in memory.
        ref_mem = _registered(AnnDataManager(fields=_fields()), self._memory(self.ref))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mem = ref_mem.transfer_fields(self._memory(self.query), extend_categories=True)
        assert _plain(query.registry["field_registries"]) == _plain(
            mem.registry["field_registries"]
        )
        self._check_codes(self.query, got)

    # --- checks -----------------------------------------------------------------------------
    def _current(self, manager: AnnDataManager) -> bool:
        """Registered at the latest edit, with the codes on disk still its own."""
        edit, token = self.seen[id(manager)]
        return edit == self.edits and token == _token(self.ref)

    def _memory(self, path: Path) -> ad.AnnData:
        """The store's data as the user wrote it, in memory (no atlasloader columns)."""
        adata = ad.read_zarr(path)
        keep = [c for c in adata.obs.columns if not c.startswith("_scvi")]
        adata.obs = adata.obs[keep].copy()
        adata.uns = {}
        return adata

    def _check_codes(self, path: Path, mapping: list[Any]) -> None:
        obs = ad.read_zarr(path).obs
        decoded = np.asarray(mapping, dtype=object)[obs["_scvi_batch"].to_numpy()]
        assert decoded.tolist() == obs["batch"].astype(object).tolist()

    @invariant()
    def stores_open_and_user_columns_are_unchanged(self) -> None:
        for path, truth in self.truth.items():
            lazy = atlasloader.read_lazy(path, mode="r")
            assert lazy.n_obs == N_OBS
            got = _user_obs(path)
            pd.testing.assert_series_equal(got["batch"], truth["batch"], check_names=False)
            np.testing.assert_array_equal(got["score"].to_numpy(), np.asarray(truth["score"]))

    @invariant()
    def staleness_is_detected_exactly(self) -> None:
        now = _token(self.ref)
        for m in self.managers:
            expected = ["obs/_scvi_batch"] if self.seen[id(m)][1] != now else []
            assert m.stale_encodings() == expected

    @invariant()
    def registry_matches_a_registration_in_memory(self) -> None:
        if self.latest is None:
            return
        # The registry persisted in the store is that of the last registration.
        stored = records.load_registries(zarr.open_group(self.ref, mode="r"))["AnnDataManager"]
        assert Registry.from_json_dict(stored).to_json() == self.latest.typed_registry.to_json()
        if not self._current(self.latest):
            return  # edited since: the next registration re-encodes (checked there)
        mem = _registered(AnnDataManager(fields=_fields()), self._memory(self.ref))
        assert _plain(self.latest.registry["field_registries"]) == _plain(
            mem.registry["field_registries"]
        )
        assert dict(self.latest.summary_stats) == dict(mem.summary_stats)
        # The codes on disk follow the registry's mapping.
        mapping = self.latest.get_state_registry("batch")["categorical_mapping"].tolist()
        self._check_codes(self.ref, mapping)


Registrations.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_registrations = Registrations.TestCase

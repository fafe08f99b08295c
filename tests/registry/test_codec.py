"""Property-based round trips of the registry JSON codec and of ``Registry`` persistence."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from atlasloader.errors import InvalidDataError
from atlasloader.registry.model import DataLocation, FieldRegistry, Registry
from atlasloader.store.codec import from_jsonable, to_jsonable

SETTINGS = settings(max_examples=60, deadline=None)

texts = st.text(max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2**62), 2**62) | finite | texts
numeric_dtypes = st.sampled_from(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint32", "float32", "float64"]
)


@st.composite
def numeric_arrays(draw: Any) -> np.ndarray:
    dtype = np.dtype(draw(numeric_dtypes))
    shape = draw(st.sampled_from([(0,), (1,), (5,), (3, 2), (1, 4), (0, 3), ()]))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)
    return draw(hnp.arrays(dtype, shape, elements=elements))


string_arrays = st.lists(texts, max_size=8).flatmap(
    lambda items: st.sampled_from(
        [np.array(items, dtype=object), np.array(items, dtype=str if items else "<U1")]
    )
)


def object_array(items: list[Any], shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr if shape is None else arr.reshape(shape)


mixed_object_arrays = st.lists(
    st.none() | st.integers(-100, 100) | texts | st.lists(texts, max_size=2), max_size=6
).map(object_array) | st.sampled_from(
    [object_array(["a", "b", "c", "d"], (2, 2)), np.array("zero-d", dtype=object), np.array("u")]
)
arrays = numeric_arrays() | string_arrays | mixed_object_arrays

values = st.recursive(
    scalars | arrays,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
states = st.dictionaries(texts, values, max_size=5)


def assert_same(back: Any, value: Any) -> None:
    """Equal values, arrays stay arrays (strings become object arrays), lists stay lists."""
    if isinstance(value, np.ndarray):
        assert isinstance(back, np.ndarray)
        assert back.shape == value.shape
        if value.dtype.kind in "OUST":
            assert back.dtype == object
            assert back.tolist() == value.tolist()
        else:
            assert back.dtype == value.dtype
            np.testing.assert_array_equal(back, value)
    elif isinstance(value, dict):
        assert isinstance(back, dict)
        assert list(back) == list(value)
        for k in value:
            assert_same(back[k], value[k])
    elif isinstance(value, list):
        assert isinstance(back, list)
        assert len(back) == len(value)
        for b, v in zip(back, value):
            assert_same(b, v)
    else:
        assert type(back) is type(value)
        assert back == value


def through_json(value: Any) -> Any:
    return from_jsonable(json.loads(json.dumps(to_jsonable(value), allow_nan=False)))


@SETTINGS
@given(numeric_arrays())
def test_numeric_arrays(arr: np.ndarray) -> None:
    assert_same(through_json(arr), arr)


@SETTINGS
@given(string_arrays | mixed_object_arrays)
def test_string_and_object_arrays(arr: np.ndarray) -> None:
    assert_same(through_json(arr), arr)


@SETTINGS
@given(states)
def test_nested_states(state: dict[str, Any]) -> None:
    encoded = to_jsonable(state)
    assert json.loads(json.dumps(encoded)) == encoded  # plain JSON types only
    assert_same(through_json(state), state)


@SETTINGS
@given(st.sampled_from([np.int8(3), np.float32(1.5), np.bool_(True), np.str_("a")]))
def test_numpy_scalars_become_python(value: np.generic) -> None:
    back = through_json(value)
    assert back == value.item()
    assert type(back) is type(value.item())


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1 + 2j]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        {"nested": {1, 2}},
        object(),
    ],
    ids=["complex", "datetime", "set", "object"],
)
def test_unsupported_values_are_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="cannot persist") as info:
        to_jsonable(bad)
    assert isinstance(info.value, InvalidDataError)


# --- Registry -------------------------------------------------------------------------------------
locations = st.none() | st.builds(
    DataLocation, st.sampled_from(["X", "obs", "obsm", "layers", "uns"]), st.none() | texts
)
field_registries = st.builds(
    FieldRegistry,
    locations,
    states,
    st.dictionaries(texts, st.integers(0, 10**9), max_size=3),
)
registries = st.builds(
    Registry,
    scvi_version=st.just("0.1.0"),
    model_name=st.none() | texts,
    setup_args=st.none()
    | st.dictionaries(texts, scalars | st.lists(texts, max_size=3), max_size=4),
    field_registries=st.dictionaries(texts, field_registries, max_size=3),
    scvi_uuid=st.none() | st.uuids().map(str),
)


@SETTINGS
@given(registries)
def test_registry_json_round_trip(registry: Registry) -> None:
    text = registry.to_json()
    back = Registry.from_json(text)
    assert back.to_json() == text
    assert_same(back.to_dict(), registry.to_dict())
    assert Registry.from_json_dict(json.loads(text)).to_json() == text
    d = json.loads(text)
    assert d["encoding-type"] == "atlasloader-registry"
    assert d["encoding-version"] == "0.1.0"


def test_registry_from_foreign_mapping() -> None:
    with pytest.raises(InvalidDataError, match="field_registries"):
        Registry.from_dict({"scvi_version": "1.0"})
    with pytest.raises(InvalidDataError, match="encoding-type"):
        Registry.from_json(json.dumps({"registry": {}}))

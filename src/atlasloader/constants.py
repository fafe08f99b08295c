"""Registry key names shared with scvi-tools, so registries stay readable by its code."""

from __future__ import annotations

from typing import NamedTuple


class _REGISTRY_KEYS_NT(NamedTuple):
    X_KEY: str = "X"
    BATCH_KEY: str = "batch"
    LABELS_KEY: str = "labels"
    PROTEIN_EXP_KEY: str = "proteins"
    CAT_COVS_KEY: str = "extra_categorical_covs"
    CONT_COVS_KEY: str = "extra_continuous_covs"
    INDICES_KEY: str = "ind_x"
    SIZE_FACTOR_KEY: str = "size_factor"
    OBSERVED_LIB_SIZE: str = "observed_lib_size"


REGISTRY_KEYS = _REGISTRY_KEYS_NT()

# Top-level registry keys (scvi-tools' ``_constants``).
SCVI_VERSION_KEY = "scvi_version"
MODEL_NAME_KEY = "model_name"
SETUP_ARGS_KEY = "setup_args"
FIELD_REGISTRIES_KEY = "field_registries"
SCVI_UUID_KEY = "_scvi_uuid"
MANAGER_UUID_KEY = "_scvi_manager_uuid"
DATA_REGISTRY_KEY = "data_registry"
STATE_REGISTRY_KEY = "state_registry"
SUMMARY_STATS_KEY = "summary_stats"
DR_ATTR_NAME = "attr_name"
DR_ATTR_KEY = "attr_key"


class ADATA_ATTRS:
    X = "X"
    LAYERS = "layers"
    OBS = "obs"
    OBSM = "obsm"
    VAR = "var"
    VARM = "varm"
    UNS = "uns"

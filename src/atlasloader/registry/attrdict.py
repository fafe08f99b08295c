"""A dict with attribute access, as scvi-tools' ``attrdict``."""

from __future__ import annotations

from typing import Any


class attrdict(dict):
    """Dictionary whose keys are also attributes; nested dicts are wrapped on access.

    Examples
    --------
    >>> d = attrdict({"batch": {"attr_name": "obs"}})
    >>> d.batch.attr_name
    'obs'
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for k, v in self.items():
            if isinstance(v, dict) and not isinstance(v, attrdict):
                dict.__setitem__(self, k, attrdict(v))

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(
                f"attrdict has no key {name!r}; available keys: {list(self.keys())}"
            ) from None
        return value

    def __getitem__(self, key: Any) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, dict) and not isinstance(value, attrdict):
            value = attrdict(value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"attrdict({dict.__repr__(self)})"

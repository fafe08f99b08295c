"""Model classes a persisted registry can name, and registering through them."""

from __future__ import annotations

from typing import Any

from ..errors import MissingKeyError


def model_class(name: str | None) -> Any:
    """The ``SetupMixin`` subclass called ``name`` (``"SCVI"``...).

    Raises
    ------
    MissingKeyError
        No model class of that name is known.
    """
    from ..model import SCVI, SetupMixin

    known: dict[str, Any] = {SCVI.__name__: SCVI}
    pending = list(SetupMixin.__subclasses__())
    while pending:  # user models defined in this process count too
        cls = pending.pop()
        known.setdefault(cls.__name__, cls)
        pending += cls.__subclasses__()
    if name not in known:
        msg = (
            f"the registry was made by {name!r}, which is not a model class atlasloader knows "
            f"(known: {sorted(known)}); register the data with a model's setup_anndata"
        )
        raise MissingKeyError(msg)
    return known[name]

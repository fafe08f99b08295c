"""``TrainLoader``: an :class:`~atlasloader.AnnDataLoader` whose checkpoint counts trained batches.

A checkpoint must resume after the last batch the model *trained on*, not the last one the
loader handed out: a fit loop that fetches ahead (Lightning's prefetching of iterables without
a length, a ``CombinedLoader``, a user's own loop) has taken more batches than it trained on.
The data module tells this wrapper each time a training batch actually reaches the model
(``on_before_batch_transfer``), and :meth:`TrainLoader.state_dict` reports that count. With
Lightning 2.6 and a sized loader the two counts are equal (measured in
``tests/lightning/test_resume.py``); counting the consumed batches keeps resume exact either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class TrainLoader:
    """Iterates ``loader``; ``state_dict`` counts the batches the model consumed.

    Parameters
    ----------
    loader
        The :class:`~atlasloader.AnnDataLoader` to wrap.
    """

    # Lightning looks for these: ``sampler.set_epoch`` selects each epoch's order.
    batch_sampler = None

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self._consumed = 0

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)
        first = next(it, None)  # the generator body runs: a resumed position is applied now
        self._consumed = self.loader.sampler.batches_yielded - (first is not None)
        if first is None:
            return
        yield first
        yield from it

    def consumed(self, n: int = 1) -> None:
        """Record that ``n`` more batches reached the training step."""
        self._consumed += n

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.loader.state_dict())
        state["batches_yielded"] = min(self._consumed, state["batches_yielded"])
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self._consumed = int(state["batches_yielded"])

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

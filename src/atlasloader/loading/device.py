"""Batches onto a device: pinned host tensors copied on a side stream, one batch ahead.

On CUDA the copy of batch ``i + 1`` is issued on a separate stream while the consumer computes
on batch ``i``; the consumer's stream waits on an event before it touches the batch, so copies
overlap compute without a host-side synchronisation per batch. Sparse CSR batches are shipped
as their three arrays (about 10x fewer bytes than dense for single-cell counts) and densified
on the device. On other devices (CPU, MPS) tensors are moved synchronously.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any


def to_device(t: Any, device: Any, non_blocking: bool | None = None) -> Any:
    """Move ``t`` to ``device``; sparse CSR is densified there (cheap on a GPU)."""
    if device is None:
        return t
    if non_blocking is None:
        if t.is_sparse_csr:
            non_blocking = bool(t.values().is_pinned())
        else:
            non_blocking = bool(getattr(t, "is_pinned", lambda: False)())
    t = t.to(device, non_blocking=non_blocking)
    return t.to_dense() if t.is_sparse_csr else t


def _move(batch: dict[str, Any], device: Any, non_blocking: bool | None = None) -> dict[str, Any]:
    return {k: to_device(t, device, non_blocking) for k, t in batch.items()}


def to_device_ahead(
    batches: Iterable[dict[str, Any]], device: Any, depth: int = 1
) -> Iterator[dict[str, Any]]:
    """``batches`` moved to ``device``; on CUDA ``depth`` batches are copied ahead."""
    if device is None:
        yield from batches
        return
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        for batch in batches:
            yield _move(batch, dev)
        return
    stream = torch.cuda.Stream(device=dev)
    pending: deque[tuple[dict[str, Any], Any, dict[str, Any]]] = deque()

    def hand_over() -> dict[str, Any]:
        moved, event, source = pending.popleft()
        current = torch.cuda.current_stream(dev)
        current.wait_event(event)
        for t in moved.values():
            # The tensors were allocated on the side stream: tell the caching allocator
            # they are used on the consumer's stream too, so their memory is not reused early.
            t.record_stream(current)
        # No host-side wait: pinned host tensors come from torch's caching host allocator,
        # which records the copy's stream and reuses their memory only once it is done
        # (pageable ones were copied synchronously anyway).
        del source, event
        return moved

    for batch in batches:
        with torch.cuda.stream(stream):
            moved = _move(batch, dev, non_blocking=True)
            event = torch.cuda.Event()
            event.record(stream)
        pending.append((moved, event, batch))
        if len(pending) > depth:
            yield hand_over()
    while pending:
        yield hand_over()

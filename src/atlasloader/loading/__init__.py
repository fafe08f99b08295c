"""Loading: fetch rows, prefetch in the background, collate to (pinned, device) tensors."""

from .loader import AnnDataLoader

__all__ = ["AnnDataLoader"]

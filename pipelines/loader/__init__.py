"""Streaming an export into training: ``ShardLoader`` and its PyTorch adapters.

Needs pyarrow and NumPy only (``pip install lakeshard``); :mod:`.torchdata`, the only module
that imports torch, needs ``lakeshard[torch]``. :mod:`.manifest` is the export's manifest format.
"""

from pipelines.loader.shardloader import ShardLoader, to_numpy

__all__ = ["ShardLoader", "to_numpy"]

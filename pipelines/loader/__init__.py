"""Streaming an export into training: ``ShardLoader`` and its PyTorch adapters.

Needs pyarrow and NumPy only (``pip install lakeshard``); :mod:`.torchdata`, the only module
that imports torch, needs ``lakeshard[torch]``. :mod:`.shardloader` is the API, :mod:`.epoch`
the plan, :mod:`.prefetch` the reading ahead, :mod:`.arrays` the batches as data, and
:mod:`.manifest` the export's manifest format.
"""

from pipelines.loader.arrays import to_numpy
from pipelines.loader.shardloader import ShardLoader

__all__ = ["ShardLoader", "to_numpy"]

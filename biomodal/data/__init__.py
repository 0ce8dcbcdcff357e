"""Torch datasets, samplers and transforms; a batch is a dict of modalities."""

from biomodal._exports import lazy_exports

_MAP = {
    "TileDataset": "tiles",
    "SpotTileDataset": "spots",
    "BatchAwareSampler": "samplers",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

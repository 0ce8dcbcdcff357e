"""Preprocessing on AnnData and arrays (scanpy style)."""

from biomodal._exports import lazy_exports

_MAP = {
    "detect_tissue": "tissue",
    "TissueMask": "tissue",
    "tile": "tiling",
    "GenePipeline": "genes",
    "intersect_panels": "genes",
    "hvg_union": "genes",
    "harmony": "batch",
    "combat": "batch",
    "center_scale": "batch",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

"""Readers: files -> numpy arrays / AnnData plus metadata (no torch)."""

from biomodal._exports import lazy_exports

_MAP = {
    "read_slide": "slide",
    "Slide": "slide",
    "read_visium": "spatial",
    "read_xenium": "spatial",
    "read_legacy_st": "spatial",
    "read_h5ad": "spatial",
    "estimate_mpp_from_spots": "spatial",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

"""Readers: files -> numpy arrays / AnnData plus metadata (no torch).

:func:`read` picks a reader by suffix or content (see :mod:`biomodal.io.registry`);
the format-specific functions (:func:`read_slide`, :func:`read_visium`, ...) stay
available directly.
"""

from biomodal._exports import lazy_exports

_MAP = {
    "read_slide": "slide",
    "Slide": "slide",
    "read_visium": "spatial",
    "read_xenium": "spatial",
    "read_legacy_st": "spatial",
    "read_h5ad": "spatial",
    "estimate_mpp_from_spots": "spatial",
    "read": "registry",
    "find_reader": "registry",
    "get_reader": "registry",
    "list_readers": "registry",
    "reader_info": "registry",
    "register_reader": "registry",
    "unregister_reader": "registry",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

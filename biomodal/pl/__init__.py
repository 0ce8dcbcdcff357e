"""Plots (matplotlib, imported lazily)."""

from biomodal._exports import lazy_exports

_MAP = {
    "training_curves": "plots",
    "embedding_umap": "plots",
    "recall_curves": "plots",
    "expression_over_slide": "plots",
    "expression_on_tissue": "spatial",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

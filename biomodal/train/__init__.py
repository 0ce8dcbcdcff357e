"""The shared contrastive trainer used by every recipe."""

from biomodal._exports import lazy_exports

_MAP = {
    "ContrastiveModel": "model",
    "TrainConfig": "config",
    "Trainer": "trainer",
    "fit": "trainer",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

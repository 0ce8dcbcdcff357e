"""Contrastive objectives behind a registry; every loss takes a mapping of embeddings."""

from biomodal._exports import lazy_exports

_MAP = {
    "get_loss": "registry",
    "list_losses": "registry",
    "register_loss": "registry",
    "LossOutput": "base",
    "ContrastiveLoss": "base",
    "ScheduledLoss": "schedule",
    "get_loss_schedule": "schedule",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

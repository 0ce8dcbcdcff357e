"""Encoders, projection heads and batch-adversarial modules behind a registry."""

from biomodal._exports import lazy_exports

_MAP = {
    "create_encoder": "registry",
    "list_encoders": "registry",
    "register_encoder": "registry",
    "encoder_spec": "registry",
    "EncoderSpec": "registry",
    "ProjectionHead": "heads",
    "GradientReversal": "adversarial",
    "BatchDiscriminator": "adversarial",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

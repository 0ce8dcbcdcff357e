"""Pathology foundation-model presets as registered encoders.

Presets: ``uni``, ``uni2_h``, ``gigapath``, ``h_optimus_0``, ``virchow`` and ``virchow2``.

Each preset records the timm architecture kwargs, normalisation and magnification of a
published pathology foundation model, so ``create_encoder("uni", pretrained_path=...)`` is all
a user with downloaded weights needs (``pretrained=True`` downloads from the gated Hugging Face
repository instead; needs network and an accepted licence). Importing this module only
registers the presets; timm is imported when one is built (see
:func:`biomodal.nn.timm_encoders.build_timm`).
"""

from __future__ import annotations

import os
from typing import Any

from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import IMAGENET_MEAN, IMAGENET_STD, TimmEncoder, build_timm

__all__ = ["FOUNDATION_PRESETS"]

#: Published pathology foundation models as timm architectures. ``kwargs`` rebuild the exact
#: architecture so local weights load strictly; ``hub`` is the gated Hugging Face repository
#: used when ``pretrained=True``; ``out_dim`` is the embedding width with the default pool.
FOUNDATION_PRESETS: dict[str, dict[str, Any]] = {
    "uni": dict(
        arch="vit_large_patch16_224",
        hub="hf-hub:MahmoodLab/uni",
        pool=None,
        out_dim=1024,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mpp=0.5,
        tile_px=224,
        kwargs=dict(img_size=224, patch_size=16, init_values=1e-5, dynamic_img_size=True),
        description="UNI (Chen et al. 2024), ViT-L/16, 1024-d",
    ),
    "uni2_h": dict(
        arch="vit_giant_patch14_224",
        hub="hf-hub:MahmoodLab/UNI2-h",
        pool=None,
        out_dim=1536,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mpp=0.5,
        tile_px=224,
        kwargs=dict(
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            init_values=1e-5,
            embed_dim=1536,
            mlp_ratio=2.66667 * 2,
            no_embed_class=True,
            mlp_layer="timm.layers.SwiGLUPacked",
            act_layer="torch.nn.SiLU",
            reg_tokens=8,
            dynamic_img_size=True,
        ),
        description="UNI2-h, ViT-H/14 with 8 registers, 1536-d",
    ),
    "gigapath": dict(
        arch="vit_giant_patch14_dinov2",
        hub="hf_hub:prov-gigapath/prov-gigapath",
        pool=None,
        out_dim=1536,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mpp=0.5,
        tile_px=224,
        kwargs=dict(
            img_size=224,
            in_chans=3,
            patch_size=16,
            embed_dim=1536,
            depth=40,
            num_heads=24,
            init_values=1e-5,
            mlp_ratio=5.33334,
        ),
        description="Prov-GigaPath tile encoder (Xu et al. 2024), ViT-g/16, 1536-d",
    ),
    "h_optimus_0": dict(
        arch="vit_giant_patch14_reg4_dinov2",
        hub="hf-hub:bioptimus/H-optimus-0",
        pool=None,
        out_dim=1536,
        mean=(0.707223, 0.578729, 0.703617),
        std=(0.211883, 0.230117, 0.177517),
        mpp=0.5,
        tile_px=224,
        kwargs=dict(img_size=224, init_values=1e-5, dynamic_img_size=False),
        description="H-optimus-0 (Bioptimus), ViT-g/14 with 4 registers, 1536-d",
    ),
    "virchow": dict(
        arch="vit_huge_patch14_224",
        hub="hf-hub:paige-ai/Virchow",
        pool="cls+mean",
        out_dim=2560,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mpp=0.5,
        tile_px=224,
        kwargs=dict(
            img_size=224,
            init_values=1e-5,
            mlp_ratio=5.3375,
            mlp_layer="timm.layers.SwiGLUPacked",
            act_layer="torch.nn.SiLU",
            dynamic_img_size=True,
        ),
        description="Virchow (Vorontsov et al. 2024), ViT-H/14, class token + mean patch token, 2560-d",
    ),
    "virchow2": dict(
        arch="vit_huge_patch14_224",
        hub="hf-hub:paige-ai/Virchow2",
        pool="cls+mean",
        out_dim=2560,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        mpp=0.5,
        tile_px=224,
        kwargs=dict(
            img_size=224,
            init_values=1e-5,
            mlp_ratio=5.3375,
            mlp_layer="timm.layers.SwiGLUPacked",
            act_layer="torch.nn.SiLU",
            reg_tokens=4,
            dynamic_img_size=True,
        ),
        description="Virchow2, ViT-H/14 with 4 registers, class token + mean patch token, 2560-d",
    ),
}


def _make_preset(key: str, preset: dict[str, Any]) -> None:
    def build(
        *,
        pretrained_path: str | os.PathLike | None = None,
        pretrained: bool = False,
        pool: str | None = preset["pool"],
        **overrides: Any,
    ) -> TimmEncoder:
        kwargs = {**preset["kwargs"], **overrides}
        if pretrained and pretrained_path is None:
            # Download from the gated hub repository (needs network and an accepted licence).
            enc = build_timm(preset["hub"], pretrained=True, pool=pool, **kwargs)
        else:
            enc = build_timm(preset["arch"], pretrained_path=pretrained_path, pool=pool, **kwargs)
        enc.spec_updates.update(mean=preset["mean"], std=preset["std"])
        if pretrained and pretrained_path is None:
            enc.spec_updates["weights"] = preset["hub"]
        return enc

    build.__doc__ = (
        f"{preset['description']}; weights from pretrained_path= or pretrained=True ({preset['hub']})."
    )
    register_encoder(
        key,
        modality="histology",
        input_kind="image",
        input_shape={"tile_px": preset["tile_px"], "in_chans": 3},
        mpp=preset["mpp"],
        mean=preset["mean"],
        std=preset["std"],
        description=preset["description"],
        heavy=True,
    )(build)


for _key, _preset in FOUNDATION_PRESETS.items():
    _make_preset(_key, _preset)

"""timm encoders (``timm:<model>``), pathology foundation-model presets, safe weight loading.

``timm:<name>`` builds any timm model with ``num_classes=0`` (a feature extractor). Weights
come from ``pretrained_path=`` (a local ``.safetensors``/``.pth``/``.bin`` state dict, loaded
with ``weights_only=True`` and a strict key check) or ``pretrained=True`` (timm downloads them;
needs network). Presets (``uni``, ``uni2_h``, ``gigapath``, ``h_optimus_0``, ``virchow``,
``virchow2``) record the architecture kwargs, normalisation and magnification of published
pathology foundation models, so ``create_encoder("uni", pretrained_path=...)`` is all a user
with downloaded weights needs.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomodal._lazy import import_optional
from biomodal.errors import CheckpointError, ConfigError
from biomodal.nn.registry import register_encoder

__all__ = ["FOUNDATION_PRESETS", "TimmEncoder", "load_checked", "load_state_dict_file"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_POOLS = (None, "cls", "mean", "cls+mean")


def load_state_dict_file(
    path: str | os.PathLike, *, checkpoint_key: str | None = None, strip_prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, safely.

    Torch files are read with ``weights_only=True`` (no arbitrary code execution). A dict
    wrapping the weights under ``"state_dict"``, ``"model"`` or ``"state"`` is unwrapped, and a
    ``"module."`` prefix shared by every key (DataParallel) is removed.

    Parameters
    ----------
    path
        The checkpoint file.
    checkpoint_key
        Take this entry of the loaded dict (e.g. ``"teacher"`` for DINO checkpoints).
    strip_prefix
        Remove this prefix from keys that have it (e.g. ``"backbone."``).

    Raises
    ------
    CheckpointError
        Missing file, unreadable content, or no tensors found.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found (expected a .safetensors, .pth or .bin file)")
    try:
        if path.suffix == ".safetensors":
            st = import_optional("safetensors.torch", "histology", package="safetensors")
            state: Any = st.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"{path}: could not read weights ({type(exc).__name__}: {exc}). Torch files are loaded with "
            "weights_only=True; re-save plain state dicts (torch.save(model.state_dict(), path))."
        ) from exc
    if checkpoint_key is not None:
        if not isinstance(state, Mapping) or checkpoint_key not in state:
            keys = sorted(state)[:10] if isinstance(state, Mapping) else type(state).__name__
            raise CheckpointError(
                f"{path}: checkpoint_key {checkpoint_key!r} not found; top-level keys: {keys}"
            )
        state = state[checkpoint_key]
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in ("state_dict", "model", "state") if k in state), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no tensors found; expected a state dict (name -> tensor)")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if strip_prefix:
        state = {(k[len(strip_prefix) :] if k.startswith(strip_prefix) else k): v for k, v in state.items()}
    return state


def _fmt_keys(keys: Sequence[str], limit: int = 20) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in total)" if len(keys) > limit else shown


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
    ignore_prefixes: Sequence[str] = (),
) -> None:
    """Load ``state`` into ``module``, failing with a readable key report.

    Parameters
    ----------
    module
        Target module.
    state
        State dict.
    source
        Where the weights came from (a path), used in messages.
    strict
        Require the keys to match exactly (after dropping ``ignore_prefixes``).
    ignore_prefixes
        Checkpoint keys starting with these (e.g. a classifier ``"head."``) are dropped when the
        module has no such parameters.

    Raises
    ------
    CheckpointError
        Missing or unexpected keys (``strict``), or tensors whose shapes differ; the message
        lists them.
    """
    own = module.state_dict()
    state = {
        k: v for k, v in state.items() if k in own or not any(k.startswith(p) for p in ignore_prefixes if p)
    }
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_fmt_keys(mismatched, 10)}")
    if strict and missing:
        problems.append(f"missing keys: {_fmt_keys(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_fmt_keys(unexpected)}")
    if problems:
        raise CheckpointError(
            f"{source}: weights do not fit {type(module).__name__} ({'; '.join(problems)}). "
            "Check the architecture kwargs (img_size, patch_size, depth, reg_tokens...) match the checkpoint."
        )
    module.load_state_dict(state, strict=False)


def _timm():
    return import_optional("timm", "histology")


def _check_model_name(name: str) -> None:
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown timm model {name!r} (encoder 'timm:{name}').{hint}")


def _resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn dotted-path strings in ``*_layer`` kwargs into classes (YAML-friendly configs)."""
    out = dict(kwargs)
    for key, value in kwargs.items():
        if key.endswith("_layer") and isinstance(value, str) and "." in value:
            mod_name, _, attr = value.rpartition(".")
            if mod_name.split(".")[0] not in ("timm", "torch"):
                raise ConfigError(f"{key}={value!r}: only timm.* and torch.* layer paths are allowed")
            try:
                out[key] = getattr(importlib.import_module(mod_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"{key}={value!r}: cannot import ({exc})") from exc
    return out


class TimmEncoder(nn.Module):
    """A timm model used as a feature extractor.

    Parameters
    ----------
    model
        timm model built with ``num_classes=0``.
    pool
        ``None``: timm's own pooling (``model(x)``). For ViTs: ``"cls"`` (class token),
        ``"mean"`` (mean of patch tokens, prefix/register tokens excluded) or ``"cls+mean"``
        (their concatenation, as Virchow recommends; ``out_dim`` doubles).
    """

    def __init__(self, model: nn.Module, pool: str | None = None) -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ConfigError(f"timm encoder: pool={pool!r} not in {_POOLS}")
        self.model = model
        self.pool = pool
        width = int(getattr(model, "head_hidden_size", None) or model.num_features)
        if pool is not None:
            if not hasattr(model, "num_prefix_tokens"):
                raise ConfigError(f"timm encoder: pool={pool!r} needs a ViT-style model with tokens")
            width = int(model.num_features) * (2 if pool == "cls+mean" else 1)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, out_dim]`` of images ``[B, C, H, W]`` (already normalised)."""
        if self.pool is None:
            out = self.model(x)
            return out.flatten(1) if out.ndim > 2 else out
        tokens = self.model.forward_features(x)
        cls = tokens[:, 0]
        patches = tokens[:, self.model.num_prefix_tokens :].mean(dim=1)
        if self.pool == "cls":
            return cls
        if self.pool == "mean":
            return patches
        return torch.cat([cls, patches], dim=-1)

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        return f"pool={self.pool!r}, out_dim={self.out_dim}"


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    clf = cfg.get("classifier") or ()
    clf = (clf,) if isinstance(clf, str) else tuple(clf)
    return tuple(f"{c}." for c in clf)


def build_timm(
    model_name: str,
    *,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike | None = None,
    checkpoint_key: str | None = None,
    strip_prefix: str | None = None,
    strict: bool = True,
    pool: str | None = None,
    **timm_kwargs: Any,
) -> TimmEncoder:
    """Build ``timm:<model_name>``; see the module docstring for the weight options."""
    timm = _timm()
    if not (model_name.startswith("hf-hub:") or model_name.startswith("hf_hub:")):
        _check_model_name(model_name)
    if pretrained and pretrained_path is not None:
        raise ConfigError(
            f"timm:{model_name}: give either pretrained=True (download) or pretrained_path, not both"
        )
    timm_kwargs.pop("num_classes", None)
    model = timm.create_model(
        model_name, pretrained=bool(pretrained), num_classes=0, **_resolve_layers(timm_kwargs)
    )
    weights: str | None = None
    if pretrained_path is not None:
        state = load_state_dict_file(
            pretrained_path, checkpoint_key=checkpoint_key, strip_prefix=strip_prefix
        )
        load_checked(
            model,
            state,
            source=str(pretrained_path),
            strict=strict,
            ignore_prefixes=_classifier_prefixes(model),
        )
        weights = str(Path(pretrained_path).expanduser().resolve())
    elif pretrained:
        cfg = model.pretrained_cfg or {}
        weights = cfg.get("hf_hub_id") or cfg.get("url") or model_name
    enc = TimmEncoder(model, pool=pool)
    cfg = model.pretrained_cfg or {}
    input_size = tuple(cfg.get("input_size") or (3, 224, 224))
    in_chans = int(timm_kwargs.get("in_chans", input_size[0]))
    img = timm_kwargs.get("img_size", input_size[-1])
    enc.spec_updates = {
        "input_shape": {"tile_px": int(img if isinstance(img, int) else img[-1]), "in_chans": in_chans},
        "mean": tuple(cfg["mean"]) if cfg.get("mean") and in_chans == len(cfg["mean"]) else None,
        "std": tuple(cfg["std"]) if cfg.get("std") and in_chans == len(cfg["std"]) else None,
        "weights": weights,
    }
    return enc


@register_encoder(
    "timm",
    family=True,
    modality="histology",
    input_kind="image",
    input_shape={"tile_px": 224, "in_chans": 3},
    description="any timm model as a feature extractor (pretrained_path= or pretrained=True)",
)
def _timm_family(model_name: str, **cfg: Any) -> TimmEncoder:
    return build_timm(model_name, **cfg)


def _peek_timm(model_name: str, **cfg: Any) -> dict[str, Any]:
    timm = _timm()
    _check_model_name(model_name)
    pc = timm.get_pretrained_cfg(model_name)
    pc = pc.to_dict() if pc is not None else {}
    size = tuple(pc.get("input_size") or (3, 224, 224))
    out: dict[str, Any] = {
        "input_shape": {
            "tile_px": int(cfg.get("img_size", size[-1])),
            "in_chans": int(cfg.get("in_chans", size[0])),
        }
    }
    if pc.get("mean"):
        out["mean"], out["std"] = tuple(pc["mean"]), tuple(pc["std"])
    if cfg.get("pretrained_path"):
        out["weights"] = str(cfg["pretrained_path"])
    return out


_timm_family.peek_spec = _peek_timm  # type: ignore[attr-defined]


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

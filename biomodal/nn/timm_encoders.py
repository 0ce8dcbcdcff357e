"""timm encoders (``timm:<model>``) and safe weight loading.

``timm:<name>`` builds any timm model with ``num_classes=0`` (a feature extractor). Weights
come from ``pretrained_path=`` (a local ``.safetensors``/``.pth``/``.bin`` state dict, loaded
with ``weights_only=True`` and a strict key check) or ``pretrained=True`` (timm downloads them;
needs network). The pathology foundation-model presets built on :func:`build_timm` live in
:mod:`biomodal.nn.foundation`.
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

__all__ = ["TimmEncoder", "build_timm", "load_checked", "load_state_dict_file"]

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

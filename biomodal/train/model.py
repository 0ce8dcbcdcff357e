"""The N-modality contrastive model: one encoder and projection head per modality, one loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biomodal.errors import ConfigError, DataError
from biomodal.losses.base import supports_distillation
from biomodal.modalities import BATCH_CODE, check_modality, features_key, mask_key
from biomodal.nn.adversarial import GradientReversal
from biomodal.nn.pixels import prepare_pixels
from biomodal.train._encode import batch_covariates, check_covariates, embed_present_rows, encoder_covariates
from biomodal.train.distill import TEACHER_PREFIX, MomentumTeacher
from biomodal.train.selfsup import VIEW_PREFIX, SelfSupervised

__all__ = ["ContrastiveModel"]

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


def _n_params(module: nn.Module | None, trainable: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _fmt(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


class ContrastiveModel(nn.Module):
    """Encoders + projection heads + contrastive loss (+ optional batch adversary).

    Parameters
    ----------
    encoders
        Modality name -> encoder module with an ``out_dim`` attribute. Each encoder receives,
        as keyword arguments, exactly the covariates it declares (``spec.covariates``, e.g.
        ``("batch_code",)`` or ``("subject",)``; see :mod:`biomodal.train._encode` for modules
        without a spec), read from the batch dict. A declared covariate missing from the batch
        is a :class:`~biomodal.errors.DataError` naming the encoder and the key.
    loss
        Module called as ``loss(embeddings, **extras)`` returning an object with ``.loss`` and
        ``.parts`` (see :mod:`biomodal.losses`); ``extras`` are the batch entries named by the
        loss's ``extra_keys``. Its parameters (logit scale...) are trained. A loss with a
        ``mix_inputs(batch, modalities)`` method (``bimixco``) mixes raw inputs in training, and
        a :class:`~biomodal.losses.ScheduledLoss` switches stage with :meth:`set_step`.
    embed_dim
        Size of the shared, L2-normalised embedding space.
    head
        Kind of :class:`biomodal.nn.ProjectionHead` (``"linear"``, ``"mlp"``, ``"residual"``) for
        every modality, or a mapping name -> kind or ready module.
    batch_key
        Batch-dict key of the integer batch-effect codes (default ``"batch_code"``, see
        :data:`biomodal.modalities.BATCH_CODE`), passed as ``batch_code=`` to encoders and losses
        that take it, and read by the adversary.
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
    distill
        Momentum distillation (ALBEF): ``{"alpha": 0.4, "momentum": 0.995, "warmup_steps": 0}``
        (see :mod:`biomodal.train.distill`); ``None`` switches it off. Needs a pairwise softmax
        loss (``clip``, ``clip_uniformity``, ``cwcl``, ``softclip`` or a schedule of them).
    self_supervised
        CleanCLIP in-modality terms (see :mod:`biomodal.train.selfsup`): one weight for every
        modality or ``{modality: weight}``; ``None`` switches them off.
    augment
        ``{modality: callable}`` producing the view of the present rows of a batch entry when
        the batch has no ``<modality>_view`` entry.
    ssl_temperature
        Fixed temperature of the in-modality InfoNCE.

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
        batch_key: str = BATCH_CODE,
        adversary: nn.Module | None = None,
        adversary_weight: float = 1.0,
        adversary_lambda: float = 1.0,
        distill: Mapping[str, Any] | None = None,
        self_supervised: float | Mapping[str, float] | None = None,
        augment: Mapping[str, Callable[[Any], Any]] | None = None,
        ssl_temperature: float = 0.1,
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
        self.covariates = {n: encoder_covariates(n, e) for n, e in encoders.items()}
        self._frozen: set[str] = set()
        self.teacher: MomentumTeacher | None = None
        if distill is not None:
            if not supports_distillation(loss):
                raise ConfigError(
                    "distill needs a pairwise softmax contrastive loss (clip, clip_uniformity, cwcl, "
                    f"softclip or a ScheduledLoss of them); {type(loss).__name__} does not support it"
                )
            self.teacher = MomentumTeacher.from_config(distill, self.encoders, self.heads)
        self.selfsup = None
        if self_supervised is not None:
            self.selfsup = SelfSupervised(self_supervised, list(encoders), augment, ssl_temperature)
        elif augment:
            raise ConfigError("augment= is used only with self_supervised=; set self_supervised weights")

    # ------------------------------------------------------------------ embeddings
    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, in construction order."""
        return tuple(self.encoders.keys())

    def _run(
        self,
        name: str,
        x: Any,
        covariates: Mapping[str, Any],
        teacher: bool = False,
        features: bool = False,
    ) -> Tensor:
        """Run encoder, head and L2 normalisation (the student's modules, or the teacher's).

        With ``features=True``, ``x`` holds the (frozen) encoder's output already and only the
        head and the normalisation run.
        """
        owner = self.teacher if teacher and self.teacher is not None else self
        if features:
            h = x.to(next((p.dtype for p in owner.heads[name].parameters()), x.dtype))
            return F.normalize(owner.heads[name](h), dim=-1)
        enc = owner.encoders[name]
        spec = getattr(self.encoders[name], "spec", None)
        x = prepare_pixels(x, spec)  # uint8 -> [0, 1] and the recorded normalisation, on the device
        z = owner.heads[name](enc(x, **covariates))
        return F.normalize(z, dim=-1)

    def encode_features(self, name: str, features: Tensor) -> Tensor:
        """Embed precomputed encoder features of ``name`` (head -> L2 normalisation).

        The features must come from this model's frozen encoder (the feature cache checks the
        encoder's fingerprint); ``encode(name, x)`` equals ``encode_features(name, encoder(x))``.
        """
        if name not in self.encoders:
            raise DataError(f"model has no encoder for {name!r}; modalities are {list(self.modalities)}")
        return self._run(name, features, {}, features=True)

    def encode(self, name: str, x: Any, **covariates: Any) -> Tensor:
        """Embed one modality: encoder -> head -> L2 normalisation, shape ``(B, embed_dim)``.

        Image and volume inputs arrive as ``[0, 1]`` tensors; when the encoder's spec records a
        mean/std (pretrained backbones do), ``(x - mean) / std`` is applied first, so datasets,
        checkpoints and ``biomodal embed`` never need to know a backbone's normalisation.

        ``covariates`` (``batch_code=``, ``subject=``) are passed to the encoder when it declares
        them and ignored otherwise (a declared one left out takes the encoder's default); other
        keywords are a :class:`~biomodal.errors.DataError`. Every row is encoded (no mask).
        """
        if name not in self.encoders:
            raise DataError(f"model has no encoder for {name!r}; modalities are {list(self.modalities)}")
        return self._run(name, x, check_covariates(name, self.covariates[name], covariates))

    def _embed(
        self,
        name: str,
        x: Any,
        batch: Mapping[str, Any],
        *,
        teacher: bool = False,
        transform: Callable[[Any], Any] | None = None,
        features: bool = False,
    ) -> Tensor:
        """Embed the present rows of ``x`` with the covariates of ``batch`` (full ``(B, D)`` output)."""
        covs = {} if features else batch_covariates(name, self.covariates[name], batch, self.batch_key)
        owner = self.teacher if teacher and self.teacher is not None else self
        return embed_present_rows(
            lambda v, **c: self._run(name, v, c, teacher=teacher, features=features),
            x,
            covs,
            batch.get(mask_key(name)),
            name=name,
            out_dim=self.embed_dim,
            modules=[owner.encoders[name], owner.heads[name]],
            transform=transform,
        )

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Embed every modality present in ``batch``; ``<name>_mask`` entries are passed through.

        Rows whose mask is False are not encoded (their embedding rows are zeros); declared
        covariates are taken from the batch. A ``<name>_features`` entry (precomputed frozen
        encoder features, :mod:`biomodal.train.feature_cache`) is embedded through the head only.
        """
        out: dict[str, Tensor] = {}
        for name in self.modalities:
            fkey = features_key(name)
            if fkey in batch:
                out[name] = self._embed(name, batch[fkey], batch, features=True)
            elif name in batch:
                out[name] = self._embed(name, batch[name], batch)
            else:
                continue
            mk = mask_key(name)
            if mk in batch:
                out[mk] = batch[mk]
        if not out:
            keys = sorted(k for k in batch if not k.endswith("_mask"))
            raise DataError(f"batch has none of the model's modalities {list(self.modalities)}; keys: {keys}")
        return out

    def loss_inputs(self, batch: Mapping[str, Any], *, teacher: bool = True) -> dict[str, Tensor]:
        """Everything the objective embeds: :meth:`forward`, the views and the teacher's embeddings.

        Views of modalities with a self-supervised weight are under ``"view/<name>"``, the
        momentum teacher's embeddings (no gradient) under ``"teacher/<name>"``.
        """
        out = self(batch)
        if self.selfsup is not None:
            for name in self.selfsup.weights:
                if name in batch:
                    x, transform = self.selfsup.view_source(name, batch)
                    out[VIEW_PREFIX + name] = self._embed(name, x, batch, transform=transform)
        if teacher and self.teacher is not None:
            self.teacher.sync(self)
            with torch.no_grad():
                for name in self.modalities:
                    fkey = features_key(name)
                    if fkey in batch:
                        out[TEACHER_PREFIX + name] = self._embed(
                            name, batch[fkey], batch, teacher=True, features=True
                        )
                    elif name in batch:
                        out[TEACHER_PREFIX + name] = self._embed(name, batch[name], batch, teacher=True)
        return out

    def prepare_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """In training mode, let the loss mix raw inputs (``bimixco``); the mixing state joins the batch."""
        mix = getattr(self.loss, "mix_inputs", None)
        if not self.training or mix is None:
            return dict(batch)
        present = [m for m in self.modalities if m in batch]
        mixed, state = mix(batch, present)
        return {**mixed, **state}

    # ------------------------------------------------------------------ loss
    def compute_loss(self, batch: Mapping[str, Any]) -> Any:
        """Embed ``batch`` and return the loss output (``.loss``, ``.parts``)."""
        batch = self.prepare_batch(batch)
        return self.loss_from_embeddings(self.loss_inputs(batch), batch)

    def loss_from_embeddings(self, embeddings: Mapping[str, Tensor], batch: Mapping[str, Any]) -> Any:
        """Contrastive loss (+ distillation, self-supervised and adversarial terms), in float32.

        Parameters
        ----------
        embeddings
            Output of :meth:`loss_inputs` (or :meth:`forward`), possibly detached leaves, as in
            GradCache accumulation.
        batch
            The whole batch dict: the loss's ``extra_keys`` and the batch codes (``batch_key``)
            are read from it.

        Returns
        -------
        LossOutput
            ``.loss`` and ``.parts``: the loss's own parts, plus ``contrastive`` (the loss's
            value), ``distill``, ``ssl/<name>`` and ``adversary`` when those terms are on.
        """
        from biomodal.train._objective import total_loss

        return total_loss(self, embeddings, batch)

    # ------------------------------------------------------------------ trainer hooks
    def set_step(self, step: int) -> None:
        """Tell the loss schedule and the distillation ramp the optimiser step (Trainer calls it)."""
        fn = getattr(self.loss, "set_step", None)
        if fn is not None:
            fn(step)
        if self.teacher is not None:
            self.teacher.step.fill_(int(step))
            self.teacher.sync(self)

    @property
    def loss_stage(self) -> int | None:
        """Index of the active stage of a :class:`~biomodal.losses.ScheduledLoss` (else ``None``)."""
        stage = getattr(self.loss, "stage", None)
        return int(stage) if isinstance(stage, Tensor) else None

    def after_optimizer_step(self) -> None:
        """Move the momentum teacher towards the student (Trainer calls it after every step)."""
        if self.teacher is not None:
            self.teacher.update(self)

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
            if id(p) in seen or pname.startswith("teacher."):
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
        if self.teacher is not None:
            t = self.teacher
            lines.append(
                f"  distill: alpha={t.alpha:g}, momentum={t.momentum:g}, warmup_steps={t.warmup_steps}"
            )
        if self.selfsup is not None:
            lines.append(f"  self_supervised: {self.selfsup!r}")
        lines.append(f"  total={_fmt(_n_params(self))}, trainable={_fmt(_n_params(self, trainable=True))})")
        return "\n".join(lines)

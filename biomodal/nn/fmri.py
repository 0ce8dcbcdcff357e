"""fMRI encoders: per-subject adapters into one shared space, then a shared residual backbone.

Following See Through Their Minds and MindEye2, every subject has its own shallow map (linear,
or a one-hidden-layer MLP) from its own number of voxels to a shared width; a deep residual MLP
shared by all subjects follows. A batch mixes subjects: ``forward(x, subject=codes)`` takes
``x`` ``[B, max_voxels]`` (each row zero-padded after its subject's voxels) and the integer
subject codes of the batch dict's ``"subject"`` entry (:data:`biomodal.modalities.SUBJECT`).

A new subject is added with :func:`add_subject` (a fresh adapter) and trained alone after
:func:`freeze_for_new_subject` (everything but that adapter frozen), the transfer experiment
of both papers. The ``embedding`` encoder passes precomputed target embeddings (a frozen image
or caption encoder's) through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from biomodal.errors import ConfigError, DataError
from biomodal.modalities import SUBJECT
from biomodal.nn.registry import register_encoder

__all__ = [
    "EmbeddingPassThrough",
    "ResidualMLP",
    "SubjectAdapterEncoder",
    "add_subject",
    "freeze_for_new_subject",
]


def _adapter(n_voxels: int, width: int, kind: str, hidden: int, dropout: float) -> nn.Module:
    if kind == "linear":
        return nn.Linear(n_voxels, width)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(n_voxels, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
        )
    raise ConfigError(f"fmri adapter={kind!r} not in ('linear', 'mlp')")


class ResidualMLP(nn.Module):
    """``depth`` pre-norm residual blocks ``x + MLP(LN(x))`` of width ``width`` (MindEye's backbone)."""

    def __init__(self, width: int, depth: int = 2, expansion: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, width * expansion),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(width * expansion, width),
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the residual blocks and a final LayerNorm."""
        for block in self.blocks:
            x = x + block(x)
        return self.norm(x)


class SubjectAdapterEncoder(nn.Module):
    """Per-subject adapters (selected by ``subject``) followed by a shared residual backbone.

    Parameters
    ----------
    voxels
        Voxel count of every subject, in subject-code order.
    width
        Shared width (adapter output, backbone width, ``out_dim``).
    depth, expansion, dropout
        Backbone blocks, their expansion factor and dropout.
    adapter
        ``"linear"`` (MindEye2) or ``"mlp"`` (See Through Their Minds' shallow adapter).
    adapter_hidden
        Hidden width of the MLP adapter.
    input_dropout
        Dropout on the voxels before the adapters.
    code_column
        Column 0 of ``x`` holds each row's subject code, used when ``subject`` is not given
        (evaluation code that embeds without covariates); the voxels start at column 1.
    """

    def __init__(
        self,
        voxels: Sequence[int],
        width: int = 256,
        depth: int = 2,
        expansion: int = 2,
        dropout: float = 0.1,
        adapter: str = "linear",
        adapter_hidden: int = 256,
        input_dropout: float = 0.0,
        code_column: bool = False,
    ) -> None:
        super().__init__()
        voxels = [int(v) for v in voxels]
        if not voxels or min(voxels) < 1:
            raise ConfigError(
                f"fmri encoder: voxels must list each subject's voxel count (>= 1), got {voxels}"
            )
        if width < 1 or depth < 0:
            raise ConfigError(f"fmri encoder: width={width} must be >= 1 and depth={depth} >= 0")
        self.kind, self.width = adapter, int(width)
        self.adapter_hidden, self.adapter_dropout = int(adapter_hidden), float(dropout)
        self.adapters = nn.ModuleList(_adapter(v, width, adapter, adapter_hidden, dropout) for v in voxels)
        self.voxels = voxels
        self.input_dropout = nn.Dropout(input_dropout)
        self.backbone = ResidualMLP(width, depth, expansion, dropout)
        self.out_dim = int(width)
        self.code_column = bool(code_column)
        self.covariates = (SUBJECT,)

    @property
    def n_subjects(self) -> int:
        """Number of subjects with an adapter."""
        return len(self.adapters)

    def shared(self, x: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
        """Map each row through its subject's adapter: ``[B, width]`` before the backbone."""
        if self.code_column:
            if subject is None:
                col = x[:, 0].detach()
                if not torch.equal(col, col.round()):
                    raise DataError(
                        "fmri encoder: column 0 must hold integer subject codes (code_column=True)"
                    )
                subject = col.long()
            x = x[:, 1:]
        if subject is None and self.n_subjects == 1:
            subject = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if subject is None:
            raise DataError(
                f"fmri encoder: forward needs subject= codes for its {self.n_subjects} subjects "
                "(the batch's 'subject' entry)"
            )
        codes = torch.as_tensor(subject, device=x.device).long().reshape(-1)
        if codes.shape[0] != x.shape[0]:
            raise DataError(f"fmri encoder: {codes.shape[0]} subject codes for {x.shape[0]} rows")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.n_subjects):
            bad = sorted({int(c) for c in codes.tolist() if not 0 <= c < self.n_subjects})
            raise DataError(
                f"fmri encoder: subject codes {bad} have no adapter (subjects 0..{self.n_subjects - 1}); "
                "add one with biomodal.nn.fmri.add_subject"
            )
        need = max(self.voxels[int(c)] for c in codes.unique().tolist()) if codes.numel() else 0
        if x.shape[1] < need:
            raise DataError(
                f"fmri encoder: input has {x.shape[1]} voxel columns, a subject here needs {need}"
            )
        x = self.input_dropout(x)
        out = x.new_zeros(x.shape[0], self.width)
        for c in codes.unique().tolist():
            rows = codes == c
            out[rows] = self.adapters[c](x[rows, : self.voxels[c]]).to(out.dtype)
        return out

    def forward(self, x: torch.Tensor, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``x`` ``[B, max_voxels]`` of subjects ``subject`` ``[B]`` into ``[B, out_dim]``.

        ``subject=None`` is allowed only with a single subject.
        """
        return self.backbone(self.shared(x, subject))

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        return f"subjects={self.n_subjects}, voxels={self.voxels}, adapter={self.kind!r}, width={self.width}"


def _find_encoder(model: nn.Module, modality: str) -> SubjectAdapterEncoder:
    enc = model.encoders[modality] if hasattr(model, "encoders") else model
    if not isinstance(enc, SubjectAdapterEncoder):
        raise ConfigError(f"{modality!r} encoder is {type(enc).__name__}, not a SubjectAdapterEncoder")
    return enc


def add_subject(model: nn.Module, n_voxels: int, *, modality: str = "fmri", seed: int | None = None) -> int:
    """Give a new subject its own adapter; return its subject code.

    ``model`` is a :class:`SubjectAdapterEncoder` or a model with ``encoders[modality]`` (a
    :class:`~biomodal.train.ContrastiveModel`). The encoder's ``spec.config["voxels"]`` is
    updated so a checkpoint rebuilds the new adapter too.
    """
    enc = _find_encoder(model, modality)
    if seed is not None:
        torch.manual_seed(seed)
    ref = next(enc.backbone.parameters())
    new = _adapter(int(n_voxels), enc.width, enc.kind, enc.adapter_hidden, enc.adapter_dropout)
    enc.adapters.append(new.to(ref.device, ref.dtype))
    enc.voxels.append(int(n_voxels))
    spec = getattr(enc, "spec", None)
    if spec is not None:
        spec.config["voxels"] = list(enc.voxels)
        spec.input_shape["voxels"] = list(enc.voxels)
    return enc.n_subjects - 1


def freeze_for_new_subject(model: nn.Module, code: int, *, modality: str = "fmri") -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` except subject ``code``'s adapter; return those.

    The backbone, the other adapters, every head and the loss's temperature stay fixed, so only
    the new subject's map into the shared space is learnt.
    """
    enc = _find_encoder(model, modality)
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(enc.adapters[code].parameters())
    for p in params:
        p.requires_grad_(True)
    return params


@register_encoder(
    "fmri_adapters",
    modality="fmri",
    input_kind="vector",
    input_shape={"voxels": None},
    covariates=(SUBJECT,),
    description="per-subject linear/MLP adapters (by the 'subject' covariate) + shared residual MLP backbone",
)
def _build_fmri_adapters(*, voxels: Sequence[int] | None = None, **kwargs: Any) -> SubjectAdapterEncoder:
    if voxels is None:
        raise ConfigError(
            "fmri_adapters: voxels (each subject's voxel count) is required; the fmri family sets it"
        )
    model = SubjectAdapterEncoder(list(voxels), **kwargs)
    model.spec_updates = {"input_shape": {"voxels": list(model.voxels)}}
    return model


class EmbeddingPassThrough(nn.Module):
    """Identity over precomputed embeddings ``[B, in_features]`` (frozen-encoder targets)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_dim = int(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` as float."""
        if x.ndim != 2 or x.shape[1] != self.out_dim:
            raise DataError(
                f"embedding encoder: expected [B, {self.out_dim}] embeddings, got {tuple(x.shape)}"
            )
        return x.float()


@register_encoder(
    "embedding",
    modality="image",
    input_kind="vector",
    input_shape={"in_features": None},
    description="pass-through of precomputed embeddings (targets cached from a frozen encoder)",
)
def _build_embedding(*, in_features: int | None = None) -> EmbeddingPassThrough:
    if in_features is None or int(in_features) < 1:
        raise ConfigError(
            f"embedding: in_features (the cached embedding width) is required, got {in_features!r}"
        )
    model = EmbeddingPassThrough(int(in_features))
    model.spec_updates = {"input_shape": {"in_features": int(in_features)}}
    return model

"""Expression encoders: ``mlp`` and ``gene_transformer``, with optional batch-conditioned norm.

Both take a float matrix ``[B, n_genes]`` (log-normalised expression in the gene-panel order
recorded with the data) and return ``[B, out_dim]``. With ``n_batches=K`` their normalisation
layers become :class:`BatchConditionedNorm`: a non-affine LayerNorm/BatchNorm followed by a
per-batch scale and shift, so ``forward(x, batch_code)`` takes ``batch_code``, a ``LongTensor[B]``
of batch-effect codes in ``[0, K)`` (the batch dict's ``"batch_code"``, see
:data:`biomodal.modalities.BATCH_CODE`). Such encoders declare ``spec.covariates ==
("batch_code",)``. Codes outside that range (``-1`` or ``>= K``, i.e. batches never seen in
training) and ``batch_code=None`` use the *unseen* affine: the mean of the learned per-batch
affines (``unseen="mean"``, default; identity at initialisation) or the identity
(``unseen="identity"``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from biomodal.errors import ConfigError, DataError
from biomodal.modalities import BATCH_CODE
from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import load_checked, load_state_dict_file

__all__ = ["BatchConditionedNorm", "GeneTransformer", "MLPEncoder"]

_ACTS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU}


def _check_codes(codes: torch.Tensor | None, n: int, where: str) -> torch.Tensor | None:
    if codes is None:
        return None
    if not isinstance(codes, torch.Tensor) or codes.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
    ):
        raise DataError(
            f"{where}: batch_code must be an integer tensor of batch codes, got {type(codes).__name__} "
            f"{getattr(codes, 'dtype', '')}"
        )
    if codes.ndim != 1 or codes.shape[0] != n:
        raise DataError(f"{where}: batch_code must have shape ({n},), got {tuple(codes.shape)}")
    return codes.long()


class BatchConditionedNorm(nn.Module):
    """Normalisation whose scale and shift depend on the batch (conditional layer norm).

    ``y = norm(x) * gamma[batch_code] + beta[batch_code]`` with ``norm`` a LayerNorm (or BatchNorm)
    without its own affine. ``gamma``/``beta`` start at 1/0, so an untrained model treats all
    batches alike.

    Parameters
    ----------
    dim
        Feature width (last axis).
    n_batches
        Number of batches seen in training; codes ``0..n_batches-1``.
    base
        ``"layer"`` or ``"batch"`` (BatchNorm1d; only for 2-D inputs).
    unseen
        Affine for codes ``-1``/``>= n_batches``/``batch_code=None``: ``"mean"`` (average of the
        learned per-batch affines) or ``"identity"`` (scale 1, shift 0).
    """

    def __init__(self, dim: int, n_batches: int, base: str = "layer", unseen: str = "mean") -> None:
        super().__init__()
        if n_batches < 1:
            raise ConfigError(f"BatchConditionedNorm: n_batches={n_batches} must be >= 1")
        if unseen not in ("mean", "identity"):
            raise ConfigError(f"BatchConditionedNorm: unseen={unseen!r} not in ('mean', 'identity')")
        if base == "layer":
            self.norm: nn.Module = nn.LayerNorm(dim, elementwise_affine=False)
        elif base == "batch":
            self.norm = nn.BatchNorm1d(dim, affine=False)
        else:
            raise ConfigError(f"BatchConditionedNorm: base={base!r} not in ('layer', 'batch')")
        self.n_batches = int(n_batches)
        self.unseen = unseen
        self.gamma = nn.Parameter(torch.ones(n_batches, dim))
        self.beta = nn.Parameter(torch.zeros(n_batches, dim))

    def affine(self, batch_code: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(scale, shift)`` of shape ``[n, dim]`` for codes ``batch_code``."""
        if self.unseen == "mean":
            g0, b0 = self.gamma.mean(0), self.beta.mean(0)
        else:
            g0, b0 = torch.ones_like(self.gamma[0]), torch.zeros_like(self.beta[0])
        if batch_code is None:
            return g0.expand(n, -1), b0.expand(n, -1)
        seen = ((batch_code >= 0) & (batch_code < self.n_batches)).unsqueeze(-1)
        idx = batch_code.clamp(0, self.n_batches - 1)
        return torch.where(seen, self.gamma[idx], g0), torch.where(seen, self.beta[idx], b0)

    def forward(self, x: torch.Tensor, batch_code: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` (``[B, dim]`` or ``[B, ..., dim]``) with the affine of ``batch_code``."""
        codes = _check_codes(batch_code, x.shape[0], "BatchConditionedNorm")
        h = self.norm(x)
        g, b = self.affine(codes, x.shape[0])
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
        return h * g.view(shape) + b.view(shape)

    def extra_repr(self) -> str:
        """Summary shown in ``repr``."""
        return f"dim={self.gamma.shape[1]}, n_batches={self.n_batches}, unseen={self.unseen!r}"


def _plain_norm(kind: str | None, dim: int) -> nn.Module:
    if kind is None or kind == "none":
        return nn.Identity()
    if kind == "layer":
        return nn.LayerNorm(dim)
    if kind == "batch":
        return nn.BatchNorm1d(dim)
    raise ConfigError(f"norm={kind!r} not in ('layer', 'batch', None)")


class MLPEncoder(nn.Module):
    """Multi-layer perceptron: ``[Linear -> norm -> activation -> dropout] x len(hidden)``.

    The strong simple baseline for spot/cell expression vectors.

    Parameters
    ----------
    in_features
        Number of genes.
    hidden
        Hidden widths; the output width is ``hidden[-1]`` unless ``out_dim`` adds a final Linear.
    out_dim
        Optional final linear projection width.
    dropout
        Dropout after each hidden layer.
    input_dropout
        Dropout on the input genes (a cheap augmentation).
    norm
        ``"layer"``, ``"batch"`` or ``None``.
    activation
        ``"gelu"``, ``"relu"``, ``"silu"`` or ``"elu"``.
    n_batches
        Use :class:`BatchConditionedNorm` in every hidden layer (``forward(x, batch_code)``).
    unseen
        Unseen-batch policy of the conditioned norms (``"mean"`` or ``"identity"``).
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...] = (512,),
        out_dim: int | None = None,
        dropout: float = 0.1,
        input_dropout: float = 0.0,
        norm: str | None = "layer",
        activation: str = "gelu",
        n_batches: int | None = None,
        unseen: str = "mean",
    ) -> None:
        super().__init__()
        if activation not in _ACTS:
            raise ConfigError(f"mlp: activation={activation!r} not in {tuple(_ACTS)}")
        if not hidden and not out_dim:
            raise ConfigError("mlp: give at least one hidden width or out_dim")
        self.in_features = int(in_features)
        self.n_batches = n_batches
        self.input_dropout = nn.Dropout(input_dropout)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = self.in_features
        for width in hidden:
            self.linears.append(nn.Linear(prev, width))
            if n_batches:
                self.norms.append(BatchConditionedNorm(width, n_batches, base=norm or "layer", unseen=unseen))
            else:
                self.norms.append(_plain_norm(norm, width))
            prev = width
        self.act = _ACTS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(prev, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or prev)

    def forward(self, x: torch.Tensor, batch_code: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[B, out_dim]``; ``batch_code`` (``LongTensor[B]``) is used only with ``n_batches``."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise DataError(f"mlp: expected input [B, {self.in_features}], got {tuple(x.shape)}")
        h = self.input_dropout(x)
        for linear, norm in zip(self.linears, self.norms):
            h = linear(h)
            h = norm(h, batch_code) if isinstance(norm, BatchConditionedNorm) else norm(h)
            h = self.dropout(self.act(h))
        return self.proj(h)


class GeneTransformer(nn.Module):
    """Transformer over gene tokens with CLS pooling (scGPT / Geneformer / Nicheformer style).

    Each selected gene becomes a token ``gene_embedding[g] + value_encoding(x_g)``; a learned CLS
    token is prepended and its final state (after the output norm) is the cell/spot embedding.

    Parameters
    ----------
    in_features
        Number of genes (the gene id is the column index of the input).
    dim, depth, heads, mlp_ratio, dropout
        Transformer width, layers, heads, feed-forward expansion and dropout.
    value_encoding
        ``"continuous"``: a small MLP of the value; ``"binned"``: per-cell quantile bins of the
        non-zero values (``n_bins`` bins; zero is its own bin, as scGPT); ``"rank"``: genes
        ordered by decreasing expression with a rank embedding and no value (Geneformer /
        Nicheformer).
    n_bins
        Number of bins for ``"binned"``.
    top_n
        Keep only the ``top_n`` most expressed genes per cell as tokens (caps sequence length).
    mask_zeros
        Exclude zero-valued genes from attention (the CLS token is always kept).
    out_dim
        Optional final linear projection width (default ``dim``).
    n_batches, unseen
        Batch-conditioned output norm (see :class:`BatchConditionedNorm`).
    """

    def __init__(
        self,
        in_features: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        value_encoding: str = "continuous",
        n_bins: int = 51,
        top_n: int | None = None,
        mask_zeros: bool = True,
        out_dim: int | None = None,
        n_batches: int | None = None,
        unseen: str = "mean",
    ) -> None:
        super().__init__()
        if value_encoding not in ("continuous", "binned", "rank"):
            raise ConfigError(
                f"gene_transformer: value_encoding={value_encoding!r} not in ('continuous', 'binned', 'rank')"
            )
        if dim % heads:
            raise ConfigError(f"gene_transformer: dim={dim} is not divisible by heads={heads}")
        if top_n is not None and top_n < 1:
            raise ConfigError(f"gene_transformer: top_n={top_n} must be >= 1")
        self.in_features = int(in_features)
        self.top_n = min(int(top_n), self.in_features) if top_n else None
        self.value_encoding = value_encoding
        self.n_bins = int(n_bins)
        self.mask_zeros = mask_zeros
        self.n_batches = n_batches
        self.gene_embed = nn.Embedding(self.in_features, dim)
        if value_encoding == "continuous":
            self.value_embed: nn.Module = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))
        elif value_encoding == "binned":
            self.value_embed = nn.Embedding(self.n_bins + 1, dim)
        else:
            self.value_embed = nn.Embedding(self.top_n or self.in_features, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                int(dim * mlp_ratio),
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm: nn.Module = (
            BatchConditionedNorm(dim, n_batches, unseen=unseen) if n_batches else nn.LayerNorm(dim)
        )
        self.proj = nn.Linear(dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = int(out_dim or dim)

    def _bins(self, vals: torch.Tensor) -> torch.Tensor:
        """Per-cell quantile bins of the non-zero values in ``1..n_bins``; zeros -> bin 0.

        Bin edges are the cell's own non-zero values at the quantiles ``k / n_bins`` (``"lower"``
        interpolation, so edges are observed values and equal counts always share a bin).
        """
        v = vals.double()
        nz = v > 0
        masked = torch.where(nz, v, torch.full_like(v, float("nan")))
        qs = torch.linspace(0, 1, self.n_bins + 1, device=v.device, dtype=v.dtype)[1:-1]
        bounds = torch.nan_to_num(
            torch.nanquantile(masked, qs, dim=1, interpolation="lower").T.contiguous(), nan=0.0
        )
        idx = torch.searchsorted(bounds, v.contiguous(), right=True) + 1
        return torch.where(nz, idx.clamp(max=self.n_bins), torch.zeros_like(idx))

    def tokenize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(gene_ids, values, padding_mask)`` of the selected tokens, each ``[B, L]``."""
        if self.top_n is not None or self.value_encoding == "rank":
            vals, ids = torch.topk(x, self.top_n or self.in_features, dim=1, sorted=True)
        else:
            vals = x
            ids = torch.arange(self.in_features, device=x.device).expand(x.shape[0], -1)
        pad = vals <= 0 if self.mask_zeros else torch.zeros_like(vals, dtype=torch.bool)
        return ids, vals, pad

    def forward(self, x: torch.Tensor, batch_code: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``[B, out_dim]`` from expression ``[B, in_features]`` (``batch_code`` as in ``mlp``)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise DataError(f"gene_transformer: expected input [B, {self.in_features}], got {tuple(x.shape)}")
        ids, vals, pad = self.tokenize(x)
        tok = self.gene_embed(ids)
        if self.value_encoding == "continuous":
            tok = tok + self.value_embed(vals.unsqueeze(-1))
        elif self.value_encoding == "binned":
            tok = tok + self.value_embed(self._bins(vals))
        else:
            tok = tok + self.value_embed.weight[: tok.shape[1]].unsqueeze(0)
        tok = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tok], dim=1)
        pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        for block in self.blocks:
            tok = block(tok, src_key_padding_mask=pad)
        cls = tok[:, 0]
        cls = self.norm(cls, batch_code) if isinstance(self.norm, BatchConditionedNorm) else self.norm(cls)
        return self.proj(cls)


def _finish(
    model: nn.Module, in_features: int, n_batches: int | None, pretrained_path: str | os.PathLike | None
) -> nn.Module:
    weights = None
    if pretrained_path is not None:
        load_checked(model, load_state_dict_file(pretrained_path), source=str(pretrained_path))
        weights = str(pretrained_path)
    model.spec_updates = {
        "input_shape": {"in_features": int(in_features)},
        "covariates": (BATCH_CODE,) if n_batches else (),
        "weights": weights,
    }
    return model


def _need(in_features: Any, name: str) -> int:
    if in_features is None or int(in_features) < 1:
        raise ConfigError(f"{name}: in_features (number of genes) is required, got {in_features!r}")
    return int(in_features)


@register_encoder(
    "mlp",
    modality="expression",
    input_kind="vector",
    input_shape={"in_features": None},
    description="MLP over the gene vector (LayerNorm/BatchNorm, dropout, optional batch-conditioned norm)",
)
def _build_mlp(
    *,
    in_features: int | None = None,
    hidden: tuple[int, ...] | list[int] = (512,),
    out_dim: int | None = None,
    dropout: float = 0.1,
    input_dropout: float = 0.0,
    norm: str | None = "layer",
    activation: str = "gelu",
    n_batches: int | None = None,
    unseen: str = "mean",
    pretrained_path: str | os.PathLike | None = None,
) -> MLPEncoder:
    n = _need(in_features, "mlp")
    model = MLPEncoder(
        n, tuple(int(h) for h in hidden), out_dim, dropout, input_dropout, norm, activation, n_batches, unseen
    )
    return _finish(model, n, n_batches, pretrained_path)


@register_encoder(
    "gene_transformer",
    modality="expression",
    input_kind="vector",
    input_shape={"in_features": None},
    description="transformer over gene tokens (gene id + value), CLS pooling, optional top-n selection",
)
def _build_gene_transformer(
    *,
    in_features: int | None = None,
    pretrained_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> GeneTransformer:
    n = _need(in_features, "gene_transformer")
    model = GeneTransformer(n, **kwargs)
    return _finish(model, n, kwargs.get("n_batches"), pretrained_path)

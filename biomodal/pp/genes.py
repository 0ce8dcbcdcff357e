"""Gene panels and expression preprocessing fitted on training sections.

:func:`intersect_panels` and :func:`hvg_union` choose a gene panel across
sections (BLEEP-style union of per-section highly variable genes, restricted to
genes every section measures); :class:`GenePipeline` fits the panel, library-size
normalisation and optional z-scoring on *training* sections only, turns any
section into a ``(n_spots, n_genes)`` float32 matrix in panel order, and
serialises itself to JSON so checkpoints can refuse a mismatched panel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.pp._gene_panels import (
    FLAVORS,
    _as_list,
    _counts,
    _dense,
    _label,
    _log_normalize,
    _names,
    _require_counts,
    _row_sums,
    hvg_union,
    intersect_panels,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad

__all__ = ["GenePipeline", "hvg_union", "intersect_panels"]

log = logging.getLogger("biomodal")

_HVG = ("union", "none")
_NORMALIZE = ("total_log1p", "none")
_LIBRARY = ("all", "panel")
_STATE_FORMAT = "biomodal.GenePipeline"


class GenePipeline:
    """Gene panel + normalisation + optional scaling, fitted on training sections only.

    Parameters
    ----------
    genes
        Fixed panel; when given, HVG selection is skipped.
    n_top_genes
        Highly variable genes per training section (``hvg="union"``).
    hvg
        ``"union"`` (union of per-section HVGs, :func:`hvg_union`) or ``"none"``
        (all genes shared by the training sections, :func:`intersect_panels`).
    normalize
        ``"total_log1p"`` (counts / library size * ``target_sum``, then ``log1p``; needs
        integer counts in ``layers["counts"]`` or ``X``) or ``"none"`` (values as stored).
    target_sum
        Library size after normalisation.
    scale
        z-score each gene with the training mean / std (``ddof=0``; constant genes get
        std 1), then clip to ``[-clip, clip]``.
    clip
        Clip value after scaling (``None``: no clipping).
    hvg_flavor
        ``"seurat"`` or ``"seurat_v3"`` (see :func:`hvg_union`).
    library_size
        ``"all"``: library size over all the section's genes (scanpy default);
        ``"panel"``: over the panel genes only (comparable across gene sets).

    Attributes
    ----------
    var_names_ : list of str
        The fitted panel, in output column order.
    mean_, std_ : numpy.ndarray or None
        Training statistics used for scaling (``None`` without ``scale``).
    """

    def __init__(
        self,
        genes: Sequence[str] | None = None,
        n_top_genes: int = 2000,
        hvg: str = "union",
        normalize: str = "total_log1p",
        target_sum: float = 1e4,
        scale: bool = False,
        clip: float | None = 10.0,
        hvg_flavor: str = "seurat",
        library_size: str = "all",
    ) -> None:
        for key, value, allowed in (
            ("hvg", hvg, _HVG),
            ("normalize", normalize, _NORMALIZE),
            ("hvg_flavor", hvg_flavor, FLAVORS),
            ("library_size", library_size, _LIBRARY),
        ):
            if value not in allowed:
                raise ConfigError(f"GenePipeline {key}={value!r}; expected one of {allowed}")
        if n_top_genes < 1:
            raise ConfigError(f"GenePipeline n_top_genes must be >= 1, got {n_top_genes}")
        if not target_sum > 0:
            raise ConfigError(f"GenePipeline target_sum must be > 0, got {target_sum}")
        if clip is not None and not clip > 0:
            raise ConfigError(f"GenePipeline clip must be > 0 or None, got {clip}")
        if genes is not None:
            genes = [str(g) for g in genes]
            if not genes or len(set(genes)) != len(genes):
                raise ConfigError("GenePipeline genes must be a non-empty list of unique names")
        self.genes = genes
        self.n_top_genes = int(n_top_genes)
        self.hvg = hvg
        self.normalize = normalize
        self.target_sum = float(target_sum)
        self.scale = bool(scale)
        self.clip = None if clip is None else float(clip)
        self.hvg_flavor = hvg_flavor
        self.library_size = library_size
        self._panel: list[str] | None = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    # ------------------------------------------------------------------ fitting
    @property
    def var_names_(self) -> list[str]:
        """The fitted gene panel (output column order)."""
        if self._panel is None:
            raise ConfigError("GenePipeline is not fitted; call fit(train_sections) or from_state_dict(...)")
        return list(self._panel)

    @property
    def is_fitted(self) -> bool:
        """Whether a panel has been fitted or loaded."""
        return self._panel is not None

    def fit(self, adatas: Sequence[ad.AnnData], *, candidates: Iterable[str] | None = None) -> GenePipeline:
        """Choose the panel and scaling statistics from *training* sections only.

        Parameters
        ----------
        adatas
            Training sections (one AnnData or a list).
        candidates
            Restrict the panel to these gene names, typically
            ``intersect_panels(train + val + test sections)`` so that every section can
            be transformed. Only gene *names* of held-out sections are used, never their
            values. Ignored when ``genes`` is given.

        Returns
        -------
        GenePipeline
            ``self``.
        """
        items = _as_list(adatas)
        if self.normalize == "total_log1p":
            for i, a in enumerate(items):
                _require_counts(_counts(a), a, i)
        if self.genes is not None:
            for i, a in enumerate(items):
                missing = [g for g in self.genes if g not in set(_names(a, i))]
                if missing:
                    raise DataError(
                        f"{_label(a, i)}: {len(missing)} panel gene(s) not measured: {missing[:20]}"
                    )
            panel = list(self.genes)
        elif self.hvg == "union":
            panel = hvg_union(
                items, n_top=self.n_top_genes, flavor=self.hvg_flavor, target_sum=self.target_sum
            )
        else:
            panel = intersect_panels(items)
        if candidates is not None and self.genes is None:
            keep = {str(g) for g in candidates}
            dropped = [g for g in panel if g not in keep]
            panel = [g for g in panel if g in keep]
            if dropped:
                log.info(
                    "%d panel gene(s) not measured in every section dropped: %s", len(dropped), dropped[:10]
                )
            if not panel:
                raise DataError("no panel gene is measured in every section (candidates)")
        self._panel, self.mean_, self.std_ = panel, None, None
        if self.scale:
            Z = np.concatenate([self._expression(a, i) for i, a in enumerate(items)], axis=0)
            self.mean_ = Z.mean(axis=0)
            std = Z.std(axis=0)
            self.std_ = np.where(std > 0, std, 1.0)
        log.info("fitted %r on %d section(s)", self, len(items))
        return self

    def _expression(self, adata: ad.AnnData, i: int = 0) -> np.ndarray:
        """Panel expression after normalisation, before scaling (float64)."""
        panel = self.var_names_
        names = _names(adata, i)
        pos = {g: j for j, g in enumerate(names)}
        missing = [g for g in panel if g not in pos]
        if missing:
            raise DataError(
                f"{_label(adata, i)}: {len(missing)} of {len(panel)} panel gene(s) missing: {missing[:20]}"
                + (" ..." if len(missing) > 20 else "")
            )
        idx = np.fromiter((pos[g] for g in panel), dtype=np.int64, count=len(panel))
        if self.normalize == "none":
            return _dense(adata.X[:, idx])
        M = _counts(adata)
        _require_counts(M, adata, i)
        sub = _dense(M[:, idx])
        totals = _row_sums(M) if self.library_size == "all" else sub.sum(axis=1)
        return _log_normalize(sub, totals, self.target_sum)

    def transform(self, adata: ad.AnnData) -> np.ndarray:
        """Panel expression of one section as ``(n_spots, n_genes)`` float32 in panel order.

        Raises
        ------
        DataError
            Panel genes missing from ``adata`` (listed), or non-count data with ``total_log1p``.
        """
        Z = self._expression(adata)
        if self.scale:
            Z = (Z - self.mean_) / self.std_
            if self.clip is not None:
                np.clip(Z, -self.clip, self.clip, out=Z)
        return Z.astype(np.float32)

    def fit_transform(self, adatas: Sequence[ad.AnnData]) -> list[np.ndarray]:
        """:meth:`fit` on ``adatas`` then :meth:`transform` each of them."""
        items = _as_list(adatas)
        self.fit(items)
        return [self.transform(a) for a in items]

    # ------------------------------------------------------------ persistence
    def check_compatible(self, var_names: Iterable[str], *, allow_extra: bool = False) -> None:
        """Raise :class:`DataError` unless ``var_names`` matches the fitted panel.

        Parameters
        ----------
        var_names
            Genes of a checkpoint or dataset.
        allow_extra
            Accept genes beyond the panel (and any order), as :meth:`transform` does.
        """
        panel = self.var_names_
        given = [str(g) for g in var_names]
        gs, ps = set(given), set(panel)
        missing = [g for g in panel if g not in gs]
        extra = [g for g in given if g not in ps]
        if missing or (extra and not allow_extra):
            raise DataError(
                f"gene panel mismatch: {len(missing)} missing {missing[:20]}"
                + ("" if allow_extra else f", {len(extra)} extra {extra[:20]}")
                + f" (panel has {len(panel)} genes)"
            )
        if not allow_extra and given != panel:
            j = next(k for k, (a, b) in enumerate(zip(given, panel)) if a != b)
            raise DataError(f"gene panel order differs: position {j} is {given[j]!r}, panel has {panel[j]!r}")

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: panel, parameters and scaling statistics."""
        return {
            "format": _STATE_FORMAT,
            "version": 1,
            "var_names": self.var_names_,
            "params": {
                "genes": self.genes,
                "n_top_genes": self.n_top_genes,
                "hvg": self.hvg,
                "normalize": self.normalize,
                "target_sum": self.target_sum,
                "scale": self.scale,
                "clip": self.clip,
                "hvg_flavor": self.hvg_flavor,
                "library_size": self.library_size,
            },
            "mean": None if self.mean_ is None else [float(v) for v in self.mean_],
            "std": None if self.std_ is None else [float(v) for v in self.std_],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> GenePipeline:
        """Rebuild a fitted pipeline from :meth:`state_dict` output.

        Raises
        ------
        CheckpointError
            Malformed or inconsistent state.
        """
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"not a GenePipeline state (format={got!r}, expected {_STATE_FORMAT!r})")
        if state.get("version") != 1:
            raise CheckpointError(
                f"unsupported GenePipeline state version {state.get('version')!r}; expected 1"
            )
        try:
            obj = cls(**state["params"])
            panel = [str(g) for g in state["var_names"]]
        except (KeyError, TypeError, ConfigError) as exc:
            raise CheckpointError(f"invalid GenePipeline state: {exc}") from exc
        if not panel or len(set(panel)) != len(panel):
            raise CheckpointError("invalid GenePipeline state: var_names must be non-empty and unique")
        obj._panel = panel
        for key in ("mean", "std"):
            v = state.get(key)
            if obj.scale:
                if v is None or len(v) != len(panel):
                    raise CheckpointError(
                        f"GenePipeline state {key!r} must have {len(panel)} values when scale=True"
                    )
                setattr(obj, f"{key}_", np.asarray(v, dtype=np.float64))
        return obj

    def __repr__(self) -> str:
        n = "unfitted" if self._panel is None else f"{len(self._panel)} genes"
        panel = (
            ""
            if self._panel is None
            else f", panel=[{', '.join(self._panel[:3])}{', ...' if len(self._panel) > 3 else ''}]"
        )
        return (
            f"GenePipeline({n}, hvg={self.hvg!r}, n_top_genes={self.n_top_genes}, "
            f"normalize={self.normalize!r}, target_sum={self.target_sum:g}, scale={self.scale}{panel})"
        )

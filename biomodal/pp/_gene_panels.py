"""Gene-panel selection across sections: shared genes and the union of per-section HVGs.

Internal module; the public names are re-exported by :mod:`biomodal.pp.genes`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad

__all__ = ["hvg_union", "intersect_panels"]

log = logging.getLogger("biomodal")

FLAVORS = ("seurat", "seurat_v3")


def _label(adata: Any, i: int) -> str:
    try:
        return str(adata.obs["sample"].iloc[0])
    except Exception:
        return f"section {i}"


def _names(item: Any, i: int) -> list[str]:
    names = item.var_names if hasattr(item, "var_names") else item
    names = [str(g) for g in names]
    if len(set(names)) != len(names):
        from collections import Counter

        dups = sorted(g for g, c in Counter(names).items() if c > 1)
        raise DataError(f"{_label(item, i)}: duplicated gene names {dups[:10]}; make var_names unique first")
    return names


def _as_list(adatas: Any) -> list[Any]:
    if hasattr(adatas, "var_names"):
        return [adatas]
    out = list(adatas)
    if not out:
        raise DataError("no sections given (expected a non-empty list of AnnData)")
    return out


def _counts(adata: ad.AnnData) -> Any:
    """``layers["counts"]`` when present, else ``X``."""
    return adata.layers["counts"] if "counts" in adata.layers else adata.X


def _is_counts(M: Any) -> bool:
    import scipy.sparse as sp

    v = M.data if sp.issparse(M) else np.asarray(M)
    if v.size and not np.isfinite(v).all():
        raise DataError("expression matrix contains NaN or infinite values")
    return bool(v.size == 0 or (v.min() >= 0 and np.all(v == np.round(v))))


def _dense(M: Any) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(M.toarray() if sp.issparse(M) else M, dtype=np.float64)


def _row_sums(M: Any) -> np.ndarray:
    return np.asarray(M.sum(axis=1), dtype=np.float64).reshape(-1)


def _log_normalize(sub: np.ndarray, totals: np.ndarray, target_sum: float) -> np.ndarray:
    factor = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(sub * factor[:, None])


def _require_counts(M: Any, adata: Any, i: int) -> None:
    if not _is_counts(M):
        raise DataError(
            f"{_label(adata, i)}: normalize='total_log1p' needs raw integer counts in layers['counts'] or X, "
            "but the values are not integer counts (already normalised?); use normalize='none'"
        )


def intersect_panels(adatas: Sequence[ad.AnnData] | Sequence[Iterable[str]]) -> list[str]:
    """Genes measured in every section, in the order of the first section.

    Parameters
    ----------
    adatas
        AnnData objects (their ``var_names``) or plain sequences of gene names.

    Returns
    -------
    list of str

    Raises
    ------
    DataError
        No sections, duplicated names inside a section, or an empty intersection.
    """
    items = _as_list(adatas)
    panels = [_names(a, i) for i, a in enumerate(items)]
    common = set(panels[0]).intersection(*panels[1:])
    out = [g for g in panels[0] if g in common]
    if not out:
        raise DataError(
            f"no gene is shared by all {len(items)} sections (gene counts: {[len(p) for p in panels]})"
        )
    if len(items) > 1:
        log.info("gene panel intersection: %d genes shared by %d sections", len(out), len(items))
    return out


def hvg_union(
    adatas: Sequence[ad.AnnData],
    n_top: int = 2000,
    flavor: str = "seurat",
    *,
    target_sum: float = 1e4,
) -> list[str]:
    """Union of per-section highly variable genes among the genes all sections share (BLEEP).

    Each section's counts (``layers["counts"]`` or ``X``) are restricted to the shared
    genes; ``"seurat"`` ranks normalised dispersions of library-size normalised,
    log1p data (library size over all the section's genes; a section whose ``X``
    is already non-integer is taken as log-normalised and used as is);
    ``"seurat_v3"`` ranks variance-stabilised raw counts (needs ``scikit-misc``).
    Selection itself is :func:`scanpy.pp.highly_variable_genes`.

    Parameters
    ----------
    adatas
        Sections (AnnData).
    n_top
        Highly variable genes per section (capped at the number of shared genes).
    flavor
        ``"seurat"`` or ``"seurat_v3"``.
    target_sum
        Library size after normalisation (``"seurat"``).

    Returns
    -------
    list of str
        The union, in the order of the first section's genes.
    """
    import anndata as ad

    if flavor not in FLAVORS:
        raise ConfigError(f"hvg flavor must be one of {FLAVORS}, got {flavor!r}")
    if n_top < 1:
        raise ConfigError(f"n_top must be >= 1, got {n_top}")
    items = _as_list(adatas)
    common = intersect_panels(items)
    sc = import_optional("scanpy", "spatial")
    if flavor == "seurat_v3":
        import_optional("skmisc.loess", "spatial", package="scikit-misc")
    chosen: set[str] = set()
    for i, a in enumerate(items):
        M = _counts(a)
        idx = a.var_names.get_indexer(common)
        counts = _is_counts(M)
        if flavor == "seurat_v3":
            if not counts:
                raise DataError(
                    f"{_label(a, i)}: flavor='seurat_v3' needs raw counts, but X is not integer counts"
                )
            sub = _dense(M[:, idx])
        elif counts:
            sub = _log_normalize(_dense(M[:, idx]), _row_sums(M), target_sum)
        else:
            log.info(
                "%s: X is not integer counts; using it as log-normalised for HVG selection", _label(a, i)
            )
            sub = _dense(M[:, idx])
        tmp = ad.AnnData(X=sub.astype(np.float32))
        tmp.var_names = common
        sc.pp.highly_variable_genes(tmp, n_top_genes=min(n_top, len(common)), flavor=flavor)
        hv = tmp.var_names[tmp.var["highly_variable"].to_numpy()]
        chosen.update(hv)
        log.info("%s: %d highly variable genes (%s)", _label(a, i), len(hv), flavor)
    out = [g for g in common if g in chosen]
    log.info("HVG union over %d sections: %d genes", len(items), len(out))
    return out

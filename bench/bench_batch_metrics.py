"""Time biomodal.eval.batch_metrics against scib-metrics' Benchmarker on synthetic batch-shifted blobs.

Prints one JSON line per dataset size with both wall-clock times (end to end:
neighbour search plus every metric; scib-metrics with its default pynndescent
neighbours and JIT compilation, as a user would run it), their ratio and the
per-metric values of both. Imports are timed separately and not included.

Usage: python bench/bench_batch_metrics.py [--quick] [--sizes 3000 20000] [--dims 50] [--skip-scib]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

# biomodal key -> scib-metrics Benchmarker result row
_PAIRS = {
    "bras": "bras",
    "ilisi": "ilisi_knn",
    "kbet": "kbet_per_label",
    "graph_connectivity": "graph_connectivity",
    "pcr": "pcr_comparison",
    "isolated_labels": "isolated_labels",
    "nmi": "nmi_ari_cluster_labels_kmeans_nmi",
    "ari": "nmi_ari_cluster_labels_kmeans_ari",
    "asw_label": "silhouette_label",
    "clisi": "clisi_knn",
}


def make_blobs(n: int, dims: int, n_labels: int = 10, n_batches: int = 4, seed: int = 0):
    """Gaussian cell-type blobs plus a per-batch shift; returns (X, X_pre, batch, labels)."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_labels, n)
    bat = rng.integers(0, n_batches, n)
    centres = rng.normal(0, 3, (n_labels, dims))
    shifts = rng.normal(0, 0.6, (n_batches, dims))
    noise = rng.normal(0, 1, (n, dims))
    X = (centres[lab] + shifts[bat] + noise).astype(np.float32)
    X_pre = (centres[lab] + 3 * shifts[bat] + noise).astype(np.float32)
    return X, X_pre, np.array([f"b{i}" for i in bat]), np.array([f"t{i}" for i in lab])


def run_biomodal(X, X_pre, bat, lab):
    from biomodal.eval.batch import batch_metrics

    t = time.perf_counter()
    res = batch_metrics(X, bat, lab, X_pre=X_pre)
    return time.perf_counter() - t, res


def run_scib(X, X_pre, bat, lab):
    import anndata as ad
    import pandas as pd
    from scib_metrics.benchmark import Benchmarker

    adata = ad.AnnData(
        X=np.zeros((X.shape[0], 1), dtype=np.float32), obs=pd.DataFrame({"batch": bat, "label": lab})
    )
    adata.obs_names = [str(i) for i in range(X.shape[0])]
    adata.obsm["X_emb"] = X
    adata.obsm["X_pre"] = X_pre
    t = time.perf_counter()
    bm = Benchmarker(
        adata,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=["X_emb"],
        pre_integrated_embedding_obsm_key="X_pre",
        progress_bar=False,
        n_jobs=-1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm.benchmark()
    elapsed = time.perf_counter() - t
    df = bm.get_results(min_max_scale=False, clean_names=False)
    return elapsed, {k: float(df.loc["X_emb", v]) for k, v in _PAIRS.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one small dataset (1,000 cells, 30 dims)")
    p.add_argument("--sizes", type=int, nargs="+", default=[3000, 20000])
    p.add_argument("--dims", type=int, default=50)
    p.add_argument("--skip-scib", action="store_true", help="time biomodal only")
    a = p.parse_args()
    sizes, dims = ([1000], 30) if a.quick else (a.sizes, a.dims)

    t = time.perf_counter()
    import sklearn.cluster  # noqa: F401  (imported lazily inside batch_metrics)

    import biomodal.eval.batch  # noqa: F401

    imp_bio = time.perf_counter() - t
    imp_scib = None
    if not a.skip_scib:
        t = time.perf_counter()
        import scib_metrics.benchmark  # noqa: F401

        imp_scib = time.perf_counter() - t
    print(
        json.dumps(
            {"import_biomodal_s": round(imp_bio, 2), "import_scib_metrics_s": imp_scib and round(imp_scib, 2)}
        )
    )
    for n in sizes:
        X, X_pre, bat, lab = make_blobs(n, dims)
        t_bio, r_bio = run_biomodal(X, X_pre, bat, lab)
        row = {"n_cells": n, "dims": dims, "biomodal_s": round(t_bio, 2)}
        if not a.skip_scib:
            t_scib, r_scib = run_scib(X, X_pre, bat, lab)
            diffs = {k: abs(r_bio[k] - r_scib[k]) for k in _PAIRS}
            row.update(
                scib_metrics_s=round(t_scib, 2),
                speedup=round(t_scib / t_bio, 1),
                max_abs_diff=round(max(diffs.values()), 4),
                scib=r_scib,
            )
        row["biomodal"] = {k: round(v, 4) for k, v in r_bio.items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

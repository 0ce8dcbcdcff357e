"""Agreement with scib-metrics on the same data and the same exact kNN graph (|diff| < 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest

sm = pytest.importorskip("scib_metrics", reason="scib-metrics (biomodal[batch]) is not installed")

from biomodal.eval._knn import exact_knn, umap_connectivities  # noqa: E402
from biomodal.eval.batch import batch_metrics  # noqa: E402

pytestmark = pytest.mark.slow  # scib-metrics JIT-compiles every metric (tens of seconds)


def _data(n=500, n_labels=4, n_batches=3, dims=10, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_labels, n)
    bat = rng.integers(0, n_batches, n)
    centres = rng.normal(0, 3, (n_labels, dims))
    shifts = rng.normal(0, 0.35, (n_batches, dims))
    noise = rng.normal(0, 1, (n, dims))
    X = centres[lab] + shifts[bat] + noise
    X_pre = centres[lab] + 3 * shifts[bat] + noise
    return X, X_pre, np.array([f"b{i}" for i in bat]), np.array([f"t{i}" for i in lab])


@pytest.fixture(scope="module")
def both():
    import scib_metrics.utils._diffusion_nn as dn
    from scib_metrics.nearest_neighbors import NeighborsResults

    X, X_pre, bat, lab = _data()
    graph = exact_knn(X, 90)
    ours = batch_metrics(X, bat, lab, X_pre=X_pre, neighbors=graph)
    nr = NeighborsResults(indices=graph.indices, distances=graph.distances)

    def exact_nn(Y, n_neighbors, **_):  # same exact search inside kBET's diffusion embedding
        g = exact_knn(Y, n_neighbors)
        return NeighborsResults(indices=g.indices, distances=g.distances)

    orig = dn.nearest_neighbors.pynndescent
    dn.nearest_neighbors.pynndescent = exact_nn
    try:
        kbet = sm.kbet_per_label(nr.subset_neighbors(50), bat, lab)
    finally:
        dn.nearest_neighbors.pynndescent = orig
    km = sm.nmi_ari_cluster_labels_kmeans(X, lab)
    ref = {
        "asw_batch": sm.silhouette_batch(X, lab, bat),
        "bras": sm.bras(X, lab, bat),
        "ilisi": sm.ilisi_knn(nr, bat),
        "clisi": sm.clisi_knn(nr, lab),
        "kbet": kbet,
        "graph_connectivity": sm.graph_connectivity(nr.subset_neighbors(15), lab),
        "pcr": sm.pcr_comparison(X_pre, X, bat, categorical=True),
        "asw_label": sm.silhouette_label(X, lab),
        "isolated_labels": sm.isolated_labels(X, lab, bat),
        "nmi": km["nmi"],
        "ari": km["ari"],
    }
    conn_ref = nr.subset_neighbors(50).knn_graph_connectivities.tocsr()
    conn = umap_connectivities(graph.subset(50))
    return ours, {k: float(v) for k, v in ref.items()}, conn, conn_ref


METRICS = ["asw_batch", "bras", "ilisi", "clisi", "kbet", "graph_connectivity", "pcr"]
METRICS += ["asw_label", "isolated_labels", "nmi", "ari"]


@pytest.mark.parametrize("metric", METRICS)
def test_metric_agrees_with_scib_metrics(both, metric):
    ours, ref, _, _ = both
    assert ours[metric] == pytest.approx(ref[metric], abs=1e-3)


def test_values_are_not_degenerate(both):
    # the comparison must exercise the metrics, not only their 0/1 extremes
    _, ref, _, _ = both
    for k in ("asw_batch", "bras", "ilisi", "kbet", "pcr", "asw_label", "graph_connectivity"):
        assert 0.02 < ref[k] < 0.999, (k, ref[k])


def test_connectivities_agree_with_umap(both):
    _, _, conn, conn_ref = both
    assert conn.shape == conn_ref.shape
    assert abs(conn - conn_ref).max() < 1e-6

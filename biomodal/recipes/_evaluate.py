"""Recipe evaluation stage: every figure a paper reports, each with its baseline or chance level."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.recipes.schema import Recipe

log = logging.getLogger("biomodal")


def _tiles_uint8(dataset: Any) -> np.ndarray:
    """All histology tiles of an (un-augmented) dataset as uint8 NxHxWx3."""
    return np.stack([dataset.tile(i) for i in range(len(dataset))])


def _knn_mean(res: dict[str, Any]) -> float:
    for key in ("knn_pearson_mean", "pearson_mean"):
        if key in res:
            return float(res[key])
    raise KeyError("knn_expression returned no pearson mean")


def evaluate(
    recipe: Recipe,
    model: Any,
    prepared: Any,
    run_dir: Path,
    *,
    untrained: Any | None = None,
) -> dict[str, Any]:
    """Evaluate a trained model on the held-out split and write plots.

    Parameters
    ----------
    recipe
        The recipe (evaluation options).
    model
        The trained :class:`~biomodal.train.ContrastiveModel`.
    prepared
        The :class:`~biomodal.recipes._data.PreparedData` of the run.
    run_dir
        Where plots go.
    untrained
        The same architecture at initialisation, for the untrained-encoder baseline.

    Returns
    -------
    dict
        Nested metrics (``retrieval``, ``expression``, ``probe``, ``batch``).
    """
    from biomodal.eval import embed, expression_prediction, knn_expression, linear_probe, retrieval

    ev = recipe.eval
    split = ev.split
    train_ds, test_ds = prepared.eval_datasets["train"], prepared.eval_datasets[split]
    mods = ["histology", "expression"]
    emb_train = embed(model, train_ds, modalities=mods, progress=False)
    emb_test = embed(model, test_ds, modalities=mods, progress=False)
    h, e = emb_test["histology"], emb_test["expression"]
    sections = np.asarray(test_ds.obs["sample"].astype(str))
    metrics: dict[str, Any] = {"split": split, "n_train": len(train_ds), "n_test": len(test_ds)}

    ret = {
        "histology_to_expression": retrieval(h, e, ks=tuple(ev.ks)),
        "expression_to_histology": retrieval(e, h, ks=tuple(ev.ks)),
    }
    if ev.within_section:
        ret["histology_to_expression_within_section"] = retrieval(
            h, e, ks=tuple(ev.ks), query_groups=sections, gallery_groups=sections
        )
        ret["expression_to_histology_within_section"] = retrieval(
            e, h, ks=tuple(ev.ks), query_groups=sections, gallery_groups=sections
        )
    metrics["retrieval"] = ret

    # Expression prediction, HEST protocol on image embeddings, with baselines beside it.
    y_train, y_test = train_ds.expression, test_ds.expression
    genes = list(train_ds.gene_names)
    hest = dict(genes=genes, n_components=ev.pca_components, top_k=ev.top_genes)
    expr = expression_prediction(emb_train["histology"], y_train, h, y_test, return_predictions=True, **hest)
    out_expr: dict[str, Any] = {
        "pearson_mean": float(expr["pearson_mean"]),
        "pearson_per_gene": expr.get("pearson_per_gene", {}),
    }
    knn = knn_expression(
        emb_train["expression"], y_train, h, y_test, k=ev.knn_k, genes=genes, top_k=ev.top_genes
    )
    out_expr["knn_pearson_mean"] = _knn_mean(knn)
    if untrained is not None:
        base_train = embed(untrained, train_ds, modalities=["histology"], progress=False)["histology"]
        base_test = embed(untrained, test_ds, modalities=["histology"], progress=False)["histology"]
        out_expr["baseline_pearson_mean"] = float(
            expression_prediction(base_train, y_train, base_test, y_test, **hest)["pearson_mean"]
        )
    if ev.baselines:
        from biomodal.eval.baselines import colour_histogram_features

        f_train = colour_histogram_features(_tiles_uint8(train_ds))
        f_test = colour_histogram_features(_tiles_uint8(test_ds))
        out_expr["colour_histogram_pearson_mean"] = float(
            expression_prediction(f_train, y_train, f_test, y_test, **hest)["pearson_mean"]
        )
    metrics["expression"] = out_expr

    # Linear probes for label columns, trained on train sections, scored on held-out sections.
    labels = list(ev.probe_labels)
    if recipe.data.label_key and recipe.data.label_key not in labels:
        labels.append(recipe.data.label_key)
    probes = {}
    for lab in labels:
        if lab not in train_ds.obs or lab not in test_ds.obs:
            log.warning("probe label %r missing from obs; skipped", lab)
            continue
        ytr, yte = np.asarray(train_ds.obs[lab].astype(str)), np.asarray(test_ds.obs[lab].astype(str))
        probes[lab] = {
            mod: linear_probe(emb_train[mod], ytr, emb_test[mod], yte) for mod in ("histology", "expression")
        }
    if probes:
        metrics["probe"] = probes

    if ev.batch_metrics:
        metrics["batch"] = _batch_section(recipe, test_ds, emb_test, labels)
    if ev.plots:
        _plots(run_dir, test_ds, emb_test, metrics, expr, train_ds, emb_train, labels)
    return metrics


def _batch_section(recipe: Recipe, ds: Any, emb: dict[str, np.ndarray], labels: list[str]) -> dict[str, Any]:
    from biomodal.eval import batch_metrics

    bkey = recipe.data.batch_key
    batches = np.asarray(ds.obs[bkey].astype(str))
    if len(set(batches)) < 2:
        return {"skipped": f"held-out split has a single {bkey!r}; batch mixing needs two or more"}
    lab = np.asarray(ds.obs[labels[0]].astype(str)) if labels else np.zeros(len(batches), dtype=str)
    out: dict[str, Any] = {"batch_key": bkey, "label_key": labels[0] if labels else None}
    joint = np.concatenate([emb["histology"], emb["expression"]], axis=1)
    for name, X in (("histology", emb["histology"]), ("joint", joint)):
        out[name] = {k: float(v) for k, v in batch_metrics(X, batches, lab).items()}
    post = recipe.batch_correction.post_hoc
    if post != "none":
        import anndata as ad

        from biomodal import pp

        a = ad.AnnData(np.zeros((len(batches), 1), dtype=np.float32), obs={"b": batches})
        a.obsm["X_joint"] = joint
        getattr(pp, post)(a, "b", basis="X_joint", adjusted_basis="X_corr")
        out["joint_corrected"] = {
            k: float(v) for k, v in batch_metrics(a.obsm["X_corr"], batches, lab).items()
        }
        out["post_hoc"] = post
    return out


def _plots(
    run_dir: Path,
    ds: Any,
    emb: dict[str, np.ndarray],
    metrics: dict[str, Any],
    expr: dict[str, Any],
    train_ds: Any,
    emb_train: dict[str, np.ndarray],
    labels: list[str],
) -> None:
    from biomodal import pl

    plots = run_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.csv").is_file():
        pl.training_curves(run_dir / "metrics.csv", plots / "training_curves.png")
    colours = {"section": ds.obs["sample"].astype(str).values, "donor": ds.obs["donor"].astype(str).values}
    if labels:
        colours[labels[0]] = ds.obs[labels[0]].astype(str).values
    pl.embedding_umap(emb["histology"], colours, plots / "umap_histology.png", title="histology")
    r = metrics["retrieval"]
    pl.recall_curves(
        {k: r[k] for k in ("histology_to_expression", "expression_to_histology")}, plots / "recall_at_k.png"
    )
    per_gene = expr.get("pearson_per_gene") or {}
    pred = expr.get("predictions")
    if per_gene and pred is not None:
        top = sorted(per_gene, key=lambda g: np.nan_to_num(per_gene[g], nan=-1.0), reverse=True)[:3]
        measured_idx = [list(ds.gene_names).index(g) for g in top]
        pred_idx = [list(expr["genes"]).index(g) for g in top]
        samples = ds.obs["sample"].astype(str).values
        first = samples == samples[0]
        pl.expression_over_slide(
            np.asarray(ds.spatial)[first],
            ds.expression[first][:, measured_idx],
            np.asarray(pred)[first][:, pred_idx],
            top,
            plots / "expression_over_slide.png",
        )

"""The spatial family's gene side: fitting the gene pipeline, evaluation targets, post-hoc correction.

Everything here is fitted on training sections only. A post-hoc correction of the expression
(``genes.post_hoc``) changes what the *expression encoder* sees; it never changes what
predictions are scored against: targets are the gene pipeline's output before any correction.

``center_scale`` / ``combat`` (inductive): fitted on the training sections, which are corrected
with their own fitted parameters; a held-out section, whose offset no image can predict, is
treated as the average training section (``center_scale``: shifted by the mean of the training
sections' means; ``combat``: an unseen batch gets no batch adjustment). The ``*_transductive``
variants correct each held-out section with its own statistics (``combat_transductive`` fits
ComBat on every section together); they look at held-out expression and say so in the metrics.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["POST_HOC", "evaluation_target", "fit_genes", "post_hoc_expression"]

log = logging.getLogger("biomodal")

SPLITS = ("train", "val", "test")

#: ``genes.post_hoc`` values -> what the metrics record about them
POST_HOC = {
    "none": None,
    "center_scale": "center_scale (inductive: per-section means fitted on training sections; held-out "
    "sections shifted by the mean training-section offset; scored against uncorrected targets)",
    "combat": "combat (inductive: ComBat fitted on training sections; held-out sections get no batch "
    "adjustment; scored against uncorrected targets)",
    "center_scale_transductive": "center_scale_transductive (TRANSDUCTIVE: each held-out section is "
    "centred with its own measured mean before it is embedded; scored against uncorrected targets)",
    "combat_transductive": "combat_transductive (TRANSDUCTIVE: ComBat fitted on all sections, held-out "
    "included, before they are embedded; scored against uncorrected targets)",
}


def fit_genes(g: Any, sections: dict[str, list[Any]]) -> Any:
    """Fit the gene pipeline of ``genes:`` config ``g`` on the training sections."""
    from biomodal.pp import GenePipeline, intersect_panels

    hvg_kw = {"n_top_genes": g.n_top_genes} if g.n_top_genes is not None else {}
    pipeline = GenePipeline(
        **hvg_kw, hvg=g.hvg, normalize=g.normalize, target_sum=g.target_sum, scale=g.scale
    )
    # panel choice and statistics from training sections only; held-out sections contribute
    # nothing but the names of the genes they measure, so every section can be transformed
    everything = [a for s in SPLITS for a in sections[s]]
    pipeline.fit(sections["train"], candidates=intersect_panels(everything))
    return pipeline


def unscaled_training_values(pipeline: Any, train_sections: list[Any]) -> np.ndarray | None:
    """Training-section panel expression before z-scoring (``None`` when the pipeline does not scale)."""
    if not pipeline.scale:
        return None
    from biomodal.pp import GenePipeline

    state = pipeline.state_dict()
    state["params"] = {**state["params"], "scale": False}
    state["mean"] = state["std"] = None
    raw = GenePipeline.from_state_dict(state)
    return np.concatenate([raw.transform(a) for a in train_sections]).astype(np.float32)


def evaluation_target(eval_datasets: dict[str, Any], pipeline: Any, train_sections: list[Any],
                      post_hoc: str) -> Any:  # fmt: skip
    """Build the ``expression`` :class:`~biomodal.eval.protocols.Target`: uncorrected, ranked unscaled.

    Call it before :func:`post_hoc_expression` changes the datasets' expression.
    """
    from biomodal.eval.protocols import Target

    values = {s: np.array(d.expression, dtype=np.float32, copy=True) for s, d in eval_datasets.items()}
    info = {"expression_post_hoc": POST_HOC[post_hoc]} if POST_HOC.get(post_hoc) else {}
    return Target(
        values,
        list(eval_datasets["train"].gene_names),
        rank_values=unscaled_training_values(pipeline, train_sections),
        info=info,
    )


def _codes(ds: Any) -> np.ndarray:
    return np.asarray(ds.obs["sample"].astype(str))


def _combat(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    import anndata as ad

    from biomodal.pp import combat

    if len(set(codes.tolist())) < 2:
        raise ConfigError(
            f"data.genes.post_hoc: combat needs two or more sections to fit on, got {sorted(set(codes))}; "
            "use center_scale or none"
        )
    tmp = ad.AnnData(np.array(x, dtype=np.float64), obs={"sample": codes})
    combat(tmp, "sample")
    return np.asarray(tmp.X, dtype=np.float32)


def _corrections(method: str, eval_datasets: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{split: corrected expression}`` of the eval datasets (see the module docstring)."""
    from biomodal.pp.batch import CenterScale

    train = eval_datasets["train"]
    tr_x, tr_codes = np.asarray(train.expression, dtype=np.float64), _codes(train)
    held = [s for s in eval_datasets if s != "train"]
    out: dict[str, np.ndarray] = {}
    if method == "combat_transductive":
        splits = ["train", *held]
        xs = [np.asarray(eval_datasets[s].expression, dtype=np.float64) for s in splits]
        joint = _combat(np.concatenate(xs), np.concatenate([_codes(eval_datasets[s]) for s in splits]))
        bounds = np.cumsum([0, *(len(x) for x in xs)])
        return {s: joint[a:b] for s, a, b in zip(splits, bounds[:-1], bounds[1:])}
    if method == "combat":
        out["train"] = _combat(tr_x, tr_codes)
        for s in held:  # an unseen batch: no batch adjustment (the average training section)
            out[s] = np.asarray(eval_datasets[s].expression, dtype=np.float32)
        return out
    cs = CenterScale(unseen="error").fit(tr_x, tr_codes)
    out["train"] = cs.transform(tr_x, tr_codes).astype(np.float32)
    offset = cs.means_.mean(axis=0)
    for s in held:
        x = np.asarray(eval_datasets[s].expression, dtype=np.float64)
        if method == "center_scale_transductive":
            out[s] = CenterScale().fit_transform(x, _codes(eval_datasets[s])).astype(np.float32)
        else:
            out[s] = (x - offset).astype(np.float32)
    return out


def post_hoc_expression(prepared: Any, method: str) -> None:
    """Correct the expression *inputs* of every dataset (training and evaluation copies) in place.

    Parameters
    ----------
    prepared
        The family's :class:`~biomodal.recipes.families.PreparedData`; its ``datasets`` (the
        training split may be a separate, augmented object) and ``eval_datasets`` are updated.
    method
        A key of :data:`POST_HOC` other than ``"none"``.
    """
    if method not in POST_HOC or method == "none":
        raise ConfigError(f"data.genes.post_hoc {method!r}; expected one of {sorted(POST_HOC)}")
    corrected = _corrections(method, prepared.eval_datasets)
    done: set[int] = set()
    for group in (prepared.eval_datasets, prepared.datasets):
        for split, ds in group.items():
            if id(ds) in done:
                continue
            if len(ds) != len(corrected[split]):
                raise ConfigError(f"post-hoc {method}: the {split} datasets disagree in size")
            ds.expression = corrected[split].copy()
            done.add(id(ds))
            log.info("post-hoc %s applied to the %s expression inputs", method, split)

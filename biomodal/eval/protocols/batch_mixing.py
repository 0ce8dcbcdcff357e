"""``batch_mixing``: scib-compatible batch-mixing and bio-conservation metrics of embeddings.

Computed on the held-out split for each configured basis (one modality's embedding, or
``"joint"``: every modality's embedding side by side).

- **No labels, no biology.** Without a label column the bio-conservation metrics are not
  computed (against a single dummy label NMI = ARI = 1 would be reported); ``bio_skipped``
  says why. When only some items are labelled (``"unlabelled"``), biology is scored on the
  labelled ones and batch mixing on all of them, without labels (``bio_scored_on``).
- **PCR against the untrained model.** When the runner supplies the untrained model's
  embeddings, they are ``X_pre`` of scib's PCR comparison; otherwise ``pcr`` is the embedding's
  own batch-variance share and stays out of the (unscaled, not scib-comparable) aggregates.
- **Post-hoc correction is transductive.** A post-hoc correction named by the recipe
  (``batch_correction.post_hoc``) is fitted on the training and held-out items' embeddings
  *with their batch labels*, so it uses the held-out batches' labels. Its figures get their own
  keys: ``batch.joint_transductive_<method>`` (the metrics on the corrected joint embedding) and
  ``batch.transductive_<method>`` (retrieval and HEST expression prediction recomputed on each
  modality's embedding corrected on its own, so any cost of the correction is measured, not
  assumed; correcting the joint embedding and splitting it would let a spot's expression
  embedding move its image features).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["BatchMixingConfig"]

_KEYS = (
    ("ilisi", "iLISI"),
    ("asw_batch", "ASW batch"),
    ("kbet", "kBET"),
    ("graph_connectivity", "graph conn."),
    ("asw_label", "ASW label"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
)
#: label values that mean "no label" (left out of the metrics)
_NO_LABEL = {"unlabelled", "nan", "None", ""}


class BatchMixingConfig(ProtocolConfig):
    """Parameters of ``batch_mixing``.

    Attributes
    ----------
    batch_key, label_key
        ``obs`` columns of batches and biological labels; default: the recipe's
        ``data.batch_key`` and the family's first label column.
    bases
        Embeddings scored: modality names and/or ``"joint"``; default: the first modality
        and ``"joint"``.
    post_hoc
        Post-hoc correction of the joint embedding to score as well (transductive, see the
        module docstring); ``None``: the recipe's ``batch_correction.post_hoc``.
    downstream
        With a post-hoc correction, recompute retrieval and HEST expression prediction on the
        corrected embedding.
    ks, target, n_components, top_k
        Retrieval cut-offs and the HEST probe's target, PCA components and scored columns for
        the downstream figures (a family without the target skips HEST, saying so).
    """

    batch_key: str | None = None
    label_key: str | None = None
    bases: list[str] | None = None
    post_hoc: Literal["none", "harmony", "center_scale"] | None = None
    downstream: bool = True
    ks: list[int] = Field(default_factory=lambda: [1, 10])
    target: str = "expression"
    n_components: int = Field(default=256, ge=1)
    top_k: int = Field(default=50, ge=1)


def _basis(ctx: EvalContext, split: str, name: str, source: str | None = None) -> Any:
    """Embedding ``name`` of ``split`` (``source``: a baseline feature instead of the model's)."""
    import numpy as np

    def one(m: str) -> Any:
        return ctx.emb(split, m) if source is None else ctx.feature(source, split, m)

    if name == "joint":
        return np.concatenate([one(m) for m in ctx.modalities], axis=1)
    ctx.check_modalities([name], "eval.protocols.batch_mixing.bases")
    return one(name)


def _labels(ctx: EvalContext, key: str | None) -> tuple[Any, Any, str | None]:
    """``(labels or None, mask of scored items, reason bio metrics are skipped or None)``."""
    import numpy as np

    obs = ctx.obs[ctx.split]
    n = len(obs)
    if key is None:
        return None, np.ones(n, bool), "no label column (label_key): bio-conservation metrics need labels"
    if key not in obs:
        return None, np.ones(n, bool), f"label column {key!r} is not in the held-out items' obs"
    lab = np.asarray(obs[key].astype(str))
    keep = ~np.isin(lab, list(_NO_LABEL))
    if len(set(lab[keep].tolist())) < 2:
        return None, np.ones(n, bool), f"label column {key!r} has fewer than two labels on held-out items"
    return lab, keep, None


def _correct(post: str, x: Any, batches: Any) -> Any:
    """Post-hoc correction ``post`` of the rows of ``x`` with their batch labels."""
    import anndata as ad
    import numpy as np

    from biomodal import pp

    a = ad.AnnData(np.zeros((len(x), 1), dtype=np.float32), obs={"b": batches})
    a.obsm["X_in"] = np.asarray(x)
    getattr(pp, post)(a, "b", basis="X_in", adjusted_basis="X_corr")
    return np.asarray(a.obsm["X_corr"], dtype=np.float32)


def _transductive(ctx: EvalContext, cfg: BatchMixingConfig, post: str, batches_test: Any) -> dict[str, Any]:
    """Correct training + held-out embeddings together (held-out batch labels included).

    The joint embedding is corrected as one (its mixing is scored); for the downstream figures
    each modality is corrected on its own, so no image feature is moved by the spot's
    expression embedding (a joint correction clusters on both and would leak one into the other).
    """
    import numpy as np

    bkey = cfg.batch_key or ctx.batch_key
    train_b = np.asarray(ctx.obs["train"][bkey].astype(str))
    labels = np.concatenate([train_b, batches_test])
    n_train = len(train_b)
    joint = _correct(
        post, np.concatenate([_basis(ctx, "train", "joint"), _basis(ctx, ctx.split, "joint")]), labels
    )
    blocks: dict[str, dict[str, Any]] = {"train": {}, ctx.split: {}}
    for m in ctx.modalities:
        corr = _correct(post, np.concatenate([ctx.emb("train", m), ctx.emb(ctx.split, m)]), labels)
        blocks["train"][m], blocks[ctx.split][m] = corr[:n_train], corr[n_train:]
    return {"joint": joint[n_train:], "blocks": blocks}


def _downstream(
    ctx: EvalContext, cfg: BatchMixingConfig, blocks: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Score retrieval (every ordered pair) and HEST prediction on corrected embeddings."""
    from itertools import permutations

    from biomodal.eval import retrieval
    from biomodal.eval.protocols.expression import hest_probe

    test = blocks[ctx.split]
    out: dict[str, Any] = {"retrieval": {
        f"{q}_to_{g}": retrieval(test[q], test[g], ks=tuple(cfg.ks), normalize=True)
        for q, g in permutations(ctx.modalities, 2)
    }}  # fmt: skip
    if cfg.target not in ctx.targets:
        out["hest_skipped"] = f"the data provide no target {cfg.target!r}"
        return out
    mod = next((m for m in ctx.modalities if m != cfg.target), None)
    if mod is None:
        out["hest_skipped"] = f"the model has no modality besides {cfg.target!r}"
        return out
    res = hest_probe(ctx, cfg.target, blocks["train"][mod], test[mod], n_components=cfg.n_components,
                     top_k=cfg.top_k)  # fmt: skip
    out["pearson_mean"], out["hest_modality"] = float(res["pearson_mean"]), mod
    if "pearson_mean_within_group" in res:
        out[f"pearson_mean_within_{ctx.group_label}"] = res["pearson_mean_within_group"]
    return out


def _batch_mixing(ctx: EvalContext, cfg: BatchMixingConfig) -> ProtocolResult:
    import numpy as np

    from biomodal.eval import batch_metrics
    from biomodal.eval.batch import BIO_METRICS

    obs = ctx.obs[ctx.split]
    bkey = cfg.batch_key or ctx.batch_key
    batches = np.asarray(obs[bkey].astype(str))
    if len(set(batches)) < 2:
        return ProtocolResult(
            {"skipped": f"held-out split has a single {bkey!r}; batch mixing needs two or more"}
        )
    lkey = cfg.label_key or (ctx.label_keys[0] if ctx.label_keys else None)
    lab, keep, why = _labels(ctx, lkey)
    out: dict[str, Any] = {"batch_key": bkey, "label_key": lkey if why is None else None}
    if why is not None:
        out["bio_skipped"] = why
    if not keep.all():
        n_bio, n_left = int(keep.sum()), int((~keep).sum())
        out["bio_scored_on"] = (
            f"{n_bio} labelled items ({n_left} unlabelled left out); "
            "batch metrics on every item, without labels"
        )
    has_pre = "untrained" in ctx.features
    out["pcr_reference"] = (
        "untrained model (scib PCR comparison)"
        if has_pre
        else "none: pcr is 1 - batch variance share of the embedding itself, left out of the aggregates"
    )

    def score(x: Any, x_pre: Any) -> dict[str, float]:
        if lab is None or keep.all():
            res = batch_metrics(x, batches, lab, X_pre=x_pre)
        else:  # batch metrics over every item (no labels); biology over the labelled ones
            res = batch_metrics(x, batches, None, X_pre=x_pre)
            res.update(batch_metrics(x[keep], batches[keep], lab[keep], metrics=list(BIO_METRICS)))
            if "batch_mean_unscaled" in res and "bio_mean_unscaled" in res:
                res["overall_unscaled"] = 0.4 * res["batch_mean_unscaled"] + 0.6 * res["bio_mean_unscaled"]
        return {k: float(v) for k, v in res.items()}

    for name in cfg.bases or [ctx.modalities[0], "joint"]:
        pre = _basis(ctx, ctx.split, name, "untrained") if has_pre else None
        out[name] = score(_basis(ctx, ctx.split, name), pre)
    post = cfg.post_hoc if cfg.post_hoc is not None else ctx.post_hoc
    if post != "none":
        corr = _transductive(ctx, cfg, post, batches)
        pre = _basis(ctx, ctx.split, "joint", "untrained") if has_pre else None
        out[f"joint_transductive_{post}"] = score(corr["joint"], pre)
        if cfg.downstream:
            out[f"transductive_{post}"] = _downstream(ctx, cfg, corr["blocks"])
        out["post_hoc"] = post
        out["post_hoc_note"] = (
            f"{post} was fitted on training and held-out embeddings with their {bkey!r} labels: "
            "transductive; its figures are under *_transductive_* keys"
        )
    return ProtocolResult(out)


def _headline(cfg: BatchMixingConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    section = metrics.get("batch", {})
    cols = [(f"batch.joint.{k}", label) for k, label in _KEYS]
    for key in (k for k in section if k.startswith("joint_transductive_")):
        method = key.removeprefix("joint_transductive_")
        tag = f" ({method}, transd.)"
        down = section.get(f"transductive_{method}", {})
        for name in list(down.get("retrieval", {}))[:2]:
            q, _, g = name.partition("_to_")
            k = max(cfg.ks)
            cols.append(
                (f"batch.transductive_{method}.retrieval.{name}.recall@{k}", f"{q[:1]}->{g[:1]} R@{k}{tag}")
            )
        if "pearson_mean" in down:
            cols.append((f"batch.transductive_{method}.pearson_mean", f"HEST r{tag}"))
        cols += [(f"batch.{key}.{k}", f"{label}{tag}") for k, label in _KEYS]
    return cols


def _markdown(section: Mapping[str, Any]) -> list[str]:
    rows = {k: v for k, v in section.items() if isinstance(v, dict) and not k.startswith("transductive_")}
    if not rows:
        return []
    keys = [k for k in next(iter(rows.values())) if all(k in r for r in rows.values())]
    lines = ["| batch/bio metrics | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[k]:.3f}" for k in keys) + " |")
    for note in ("bio_skipped", "pcr_reference", "post_hoc_note"):
        if note in section:
            lines.append(f"\n{note.replace('_', ' ')}: {section[note]}")
    return lines


register_protocol(
    "batch_mixing",
    config=BatchMixingConfig,
    section="batch",
    headline=_headline,
    markdown=_markdown,
    needs_untrained=True,
)(_batch_mixing)

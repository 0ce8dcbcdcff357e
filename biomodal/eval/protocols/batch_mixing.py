"""``batch_mixing``: scib-compatible batch-mixing and bio-conservation metrics of embeddings.

Computed on the held-out split for each configured basis (one modality's embedding, or
``"joint"``: every modality's embedding side by side). With a post-hoc correction named by
the recipe (``batch_correction.post_hoc``), the corrected joint embedding is scored too; the
correction uses the held-out items' own batch labels, i.e. it is transductive.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

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
        Post-hoc correction of the joint embedding to score as well; ``None``: the recipe's
        ``batch_correction.post_hoc``.
    """

    batch_key: str | None = None
    label_key: str | None = None
    bases: list[str] | None = None
    post_hoc: Literal["none", "harmony", "center_scale"] | None = None


def _basis(ctx: EvalContext, name: str) -> Any:
    import numpy as np

    if name == "joint":
        return np.concatenate([ctx.emb(ctx.split, m) for m in ctx.modalities], axis=1)
    ctx.check_modalities([name], "eval.protocols.batch_mixing.bases")
    return ctx.emb(ctx.split, name)


def _batch_mixing(ctx: EvalContext, cfg: BatchMixingConfig) -> ProtocolResult:
    import numpy as np

    from biomodal.eval import batch_metrics

    obs = ctx.obs[ctx.split]
    bkey = cfg.batch_key or ctx.batch_key
    batches = np.asarray(obs[bkey].astype(str))
    if len(set(batches)) < 2:
        return ProtocolResult(
            {"skipped": f"held-out split has a single {bkey!r}; batch mixing needs two or more"}
        )
    lkey = cfg.label_key or (ctx.label_keys[0] if ctx.label_keys else None)
    lab = np.asarray(obs[lkey].astype(str)) if lkey else np.zeros(len(batches), dtype=str)
    out: dict[str, Any] = {"batch_key": bkey, "label_key": lkey}
    bases = cfg.bases or [ctx.modalities[0], "joint"]
    for name in bases:
        out[name] = {k: float(v) for k, v in batch_metrics(_basis(ctx, name), batches, lab).items()}
    post = cfg.post_hoc if cfg.post_hoc is not None else ctx.post_hoc
    if post != "none":
        import anndata as ad

        from biomodal import pp

        a = ad.AnnData(np.zeros((len(batches), 1), dtype=np.float32), obs={"b": batches})
        a.obsm["X_joint"] = _basis(ctx, "joint")
        getattr(pp, post)(a, "b", basis="X_joint", adjusted_basis="X_corr")
        out["joint_corrected"] = {
            k: float(v) for k, v in batch_metrics(a.obsm["X_corr"], batches, lab).items()
        }
        out["post_hoc"] = post
    return ProtocolResult(out)


def _headline(cfg: BatchMixingConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    section = metrics.get("batch", {})
    basis = "joint_corrected" if "joint_corrected" in section else "joint"
    return [(f"batch.{basis}.{k}", label) for k, label in _KEYS]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    rows = {k: v for k, v in section.items() if isinstance(v, dict)}
    if not rows:
        return []
    keys = list(next(iter(rows.values())))
    lines = ["| batch/bio metrics | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[k]:.3f}" for k in keys) + " |")
    return lines


register_protocol(
    "batch_mixing", config=BatchMixingConfig, section="batch", headline=_headline, markdown=_markdown
)(_batch_mixing)

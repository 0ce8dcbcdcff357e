"""Evaluation: full-set retrieval, expression prediction, probes, batch metrics."""

from biomodal._exports import lazy_exports

_MAP = {
    "embed": "_embed",
    "retrieval": "_retrieval",
    "retrieval_ranks": "_retrieval",
    "topk_neighbours": "_retrieval",
    "batch_metrics": "batch",
    "expression_prediction": "expression",
    "knn_expression": "expression",
    "linear_probe": "probe",
    "k_candidate_accuracy": "k_candidate",
    "macro_auroc": "multilabel",
    "multilabel_probe": "multilabel",
    "zero_shot_evaluate": "zero_shot",
    "survival_analysis": "survival",
    "survival_evaluation": "survival",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)

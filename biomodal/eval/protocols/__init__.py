"""Evaluation protocols behind a registry; a recipe lists the ones it runs in ``eval.protocols``.

Built in: ``retrieval`` (any pair of modalities, both directions, full set, chance beside
every figure; also the validation metric of early stopping), ``hest_expression``,
``knn_expression``, ``probe``, ``batch_mixing``, ``classification``, ``survival``,
``zero_shot`` (prompts per class), ``k_candidate`` (pick the held-out modality among k, Symile's
task) and ``multilabel_probe`` (per-class probes, macro AUROC). Adding a protocol is one new module here
with a config class and a function registered by :func:`register_protocol`, plus its name in
``_BUILTIN`` below; its plots register in :mod:`biomodal.pl.protocols`.

Importing this package is light (pydantic only): numpy, scikit-learn and torch are imported
inside the protocol functions, so recipes can be validated without them.
"""

from __future__ import annotations

import importlib

from biomodal.eval.protocols.base import (
    EvalContext,
    ProtocolConfig,
    ProtocolInfo,
    ProtocolResult,
    Target,
    get_protocol,
    list_protocols,
    register_protocol,
)

__all__ = [
    "EvalContext",
    "ProtocolConfig",
    "ProtocolInfo",
    "ProtocolResult",
    "Target",
    "get_protocol",
    "list_protocols",
    "register_protocol",
]

_BUILTIN = (
    "retrieval",
    "expression",
    "probe",
    "batch_mixing",
    "classification",
    "survival",
    "zero_shot",
    "k_candidate",
    "multilabel_probe",
)

for _mod in _BUILTIN:
    importlib.import_module(f"biomodal.eval.protocols.{_mod}")

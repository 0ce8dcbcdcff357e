"""The supervised reference of the clinical family: the recipe's ECG encoder trained on the labels.

PTB-XL's benchmarks (Strodthoff et al. 2021) score 1-D CNNs trained with binary cross-entropy on
the diagnostic superclasses. This baseline trains the recipe's own ECG architecture that way, on
the training folds only, selects the epoch by validation macro AUROC (never by test), and hands
the encoder's features (before the classification layer) to the probes, which fit them the same
way as every other representation: the upper reference a contrastive ECG embedding is read
against.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["supervised_ecg_features"]

log = logging.getLogger("biomodal")


def _build_encoder(recipe: Any, input_specs: Mapping[str, Mapping[str, Any]]) -> Any:
    from biomodal.nn import create_encoder
    from biomodal.nn.registry import encoder_factory
    from biomodal.recipes._build import _accepts

    cfg = recipe.modalities["ecg"]
    params = dict(cfg.params)
    factory = encoder_factory(cfg.encoder)
    for key, value in dict(input_specs.get("ecg", {})).items():
        if _accepts(factory, key):
            params.setdefault(key, value)
    return create_encoder(cfg.encoder, **params)


def _present(ds: Any) -> np.ndarray:
    return np.asarray(ds.present.get("ecg", np.ones(len(ds), bool)), dtype=bool)


def _batches(ds: Any, rows: np.ndarray, batch_size: int) -> Any:
    from torch.utils.data import default_collate

    for a in range(0, len(rows), batch_size):
        items = [ds.item(int(i), skip=("report", "labs")) for i in rows[a : a + batch_size]]
        yield default_collate(items)["ecg"]


def _encode(encoder: Any, ds: Any, batch_size: int = 128) -> np.ndarray:
    import torch

    rows = np.flatnonzero(_present(ds))
    out = np.zeros((len(ds), encoder.out_dim), np.float32)
    encoder.eval()
    with torch.inference_mode():
        chunks = [encoder(x).float().numpy() for x in _batches(ds, rows, batch_size)]
    if chunks:
        out[rows] = np.concatenate(chunks)
    return out


def _macro_auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    cols = [c for c in range(y.shape[1]) if 0 < y[:, c].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, c], score[:, c]) for c in cols])) if cols else float("nan")


def supervised_ecg_features(
    recipe: Any,
    datasets: Mapping[str, Any],
    target: Any,
    input_specs: Mapping[str, Mapping[str, Any]],
    *,
    epochs: int = 40,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int = 8,
) -> Callable[[str, str], np.ndarray]:
    """``fn(split, modality)``: features of the recipe's ECG encoder trained on the labels.

    Parameters
    ----------
    recipe
        The recipe (its ``ecg`` encoder and ``seed``).
    datasets
        ``{split: ClinicalDataset}``; trained on ``train``, the epoch chosen on ``val`` when
        there is one (else the last epoch).
    target
        The multi-label :class:`~biomodal.eval.protocols.Target` (``superclass``).
    input_specs
        The family's builder keywords (lead count).
    epochs, lr, batch_size, patience
        AdamW with binary cross-entropy; early stopping after ``patience`` epochs without a
        better validation macro AUROC.
    """
    state: dict[str, Any] = {}

    def train() -> Any:
        import torch
        from torch import nn

        torch.manual_seed(recipe.seed)
        rng = np.random.default_rng(recipe.seed)
        encoder = _build_encoder(recipe, input_specs)
        y = np.asarray(target.values["train"], np.float32)
        head = nn.Linear(encoder.out_dim, y.shape[1])
        opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=1e-4)
        ds, val = datasets["train"], datasets.get("val")
        rows = np.flatnonzero(_present(ds))
        best, best_state, waited = -np.inf, None, 0
        epoch = 0
        for epoch in range(epochs):  # noqa: B007 (logged after the loop)
            encoder.train()
            head.train()
            order = rng.permutation(rows)
            for a in range(0, len(order), batch_size):
                idx = order[a : a + batch_size]
                x = next(_batches(ds, idx, len(idx)))
                loss = nn.functional.binary_cross_entropy_with_logits(
                    head(encoder(x)), torch.from_numpy(y[idx])
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
            if val is None:
                continue
            feats = _encode(encoder, val)
            with torch.no_grad():
                score = head(torch.from_numpy(feats)).numpy()
            keep = _present(val)
            auc = _macro_auroc(np.asarray(target.values["val"])[keep], score[keep])
            if auc > best:
                best, best_state, waited = auc, copy.deepcopy(encoder.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        if best_state is not None:
            encoder.load_state_dict(best_state)
        log.info("supervised ECG reference: %d epochs, validation macro AUROC %.3f", epoch + 1, best)
        state["val_macro_auroc"] = best
        return encoder

    def fn(split: str, modality: str) -> np.ndarray:
        if modality != "ecg":
            raise ConfigError(f"baseline 'supervised_ecg' describes the ecg modality, not {modality!r}")
        if split not in datasets:
            raise ConfigError(f"baseline 'supervised_ecg': the data have no {split!r} split")
        if "encoder" not in state:
            state["encoder"] = train()
        if split not in state:
            state[split] = _encode(state["encoder"], datasets[split])
        return state[split]

    fn.state = state  # type: ignore[attr-defined]
    return fn

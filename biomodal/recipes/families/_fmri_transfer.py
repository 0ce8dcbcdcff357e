"""New-subject transfer: a new adapter on a frozen shared model vs a model trained from scratch.

As See Through Their Minds and MindEye2: a subject left out of training (``data.transfer_subjects``)
gets its own adapter, trained alone (backbone, heads and the other adapters frozen) on a fraction
of its training trials; the same data train a subject-specific model of the same architecture
from scratch, and a ridge regression. All three are scored by ``top1_among_n`` on the subject's
test stimuli.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal.errors import DataError
from biomodal.modalities import SUBJECT

log = logging.getLogger("biomodal")

__all__ = ["new_subject_curve"]


def _with_code(ds: Any, rows: np.ndarray, code: int) -> dict[str, Any]:
    import torch

    x = torch.as_tensor(ds.features("fmri")[rows]).clone()
    x[:, 0] = float(code)
    return {
        "fmri": x,
        ds.target_name: torch.as_tensor(ds.features(ds.target_name)[rows]),
        SUBJECT: torch.full((len(rows),), code, dtype=torch.long),
    }


def _train(model: Any, params: list[Any], data: dict[str, Any], *, steps: int, lr: float, batch_size: int,
           seed: int) -> None:  # fmt: skip
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    n = len(data[SUBJECT])
    model.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[: min(batch_size, n)]
        batch = {k: v[idx] for k, v in data.items()}
        out = model.compute_loss(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()


def _score(
    model: Any, data: dict[str, Any], stim: np.ndarray, tname: str, n: int, draws: int, seed: int
) -> dict:
    import torch

    from biomodal.recipes.families._fmri_eval import top1_among_n

    model.eval()
    with torch.no_grad():
        zb = model.encode("fmri", data["fmri"], subject=data[SUBJECT]).numpy()
        zs = model.encode(tname, data[tname]).numpy()
    return top1_among_n(zb, zs, stim, n=n, draws=draws, seed=seed)


def _scratch(model: Any, n_vox: int, tname: str) -> Any:
    from biomodal.losses import get_loss
    from biomodal.nn import create_encoder
    from biomodal.train import ContrastiveModel

    cfg = dict(model.encoders["fmri"].spec.config)
    cfg["voxels"] = [n_vox]
    enc = create_encoder("fmri_adapters", **cfg)
    tgt = create_encoder("embedding", in_features=model.encoders[tname].out_dim, modality=tname)
    return ContrastiveModel({"fmri": enc, tname: tgt}, get_loss("softclip"), embed_dim=model.embed_dim)


def new_subject_curve(
    model: Any,
    prepared: Any,
    *,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    steps: int = 300,
    lr: float = 1e-3,
    batch_size: int = 64,
    n: int = 300,
    draws: int = 30,
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1 among ``n`` for a new subject as a function of its training data.

    Parameters
    ----------
    model
        The trained :class:`~biomodal.train.ContrastiveModel` of an fMRI recipe (not modified).
    prepared
        Its :class:`~biomodal.recipes.families.PreparedData`, holding the transfer subject's
        datasets in ``info["transfer"]`` (``data.transfer_subjects`` of the recipe).
    fractions
        Parts of the subject's training trials to train on (at least 2 items each).
    steps, lr, batch_size
        Optimisation of the new adapter and of the from-scratch model (same for both).

    Returns
    -------
    dict
        ``{"subject", "n_voxels", "curve": [{"fraction", "n_train", "shared", "scratch",
        "ridge"}]}``, each model entry a :func:`top1_among_n` result on the test stimuli.
    """
    import torch

    from biomodal.nn.fmri import add_subject, freeze_for_new_subject
    from biomodal.recipes.families._fmri_eval import ridge_features

    tr = prepared.info.get("transfer", {})
    if "train" not in tr or "test" not in tr:
        raise DataError("no transfer subject: set data.transfer_subjects (with split: stimulus)")
    train, test = tr["train"], tr["test"]
    subjects = sorted(set(train.obs["subject"]))
    if len(subjects) != 1:
        raise DataError(f"new_subject_curve takes one transfer subject, the recipe has {subjects}")
    sub = subjects[0]
    n_vox = len(prepared.preprocessors["fmri"].masks[sub])
    tname = train.target_name
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    test_stim = test.obs["stimulus"].astype(str).to_numpy()
    curve = []
    for frac in fractions:
        k = max(2, round(frac * len(train)))
        rows = np.sort(order[:k])
        row: dict[str, Any] = {"fraction": float(frac), "n_train": int(k)}
        shared = copy.deepcopy(model)
        shared.set_step(10**9)  # the last loss stage (SoftCLIP)
        code = add_subject(shared, n_vox, seed=seed)
        params = freeze_for_new_subject(shared, code)
        _train(
            shared,
            params,
            _with_code(train, rows, code),
            steps=steps,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
        )
        row["shared"] = _score(
            shared, _with_code(test, np.arange(len(test)), code), test_stim, tname, n, draws, seed
        )
        torch.manual_seed(seed)
        scratch = _scratch(model, n_vox, tname)
        params = [p for p in scratch.parameters() if p.requires_grad]
        _train(
            scratch, params, _with_code(train, rows, 0), steps=steps, lr=lr, batch_size=batch_size, seed=seed
        )
        row["scratch"] = _score(
            scratch, _with_code(test, np.arange(len(test)), 0), test_stim, tname, n, draws, seed
        )
        xtr, ttr = train.features("fmri")[rows][:, 1:], train.features(tname)[rows]
        predict = ridge_features(xtr, ttr, np.zeros(k))
        from biomodal.recipes.families._fmri_eval import top1_among_n

        pred = predict(test.features("fmri")[:, 1:], np.zeros(len(test)))
        row["ridge"] = top1_among_n(pred, test.features(tname), test_stim, n=n, draws=draws, seed=seed)
        log.info(
            "new subject %s, %d items: shared %.3f, scratch %.3f, ridge %.3f (b->s top-1)",
            sub, k, row["shared"]["brain_to_stimulus"], row["scratch"]["brain_to_stimulus"],
            row["ridge"]["brain_to_stimulus"],
        )  # fmt: skip
        curve.append(row)
    return {"subject": sub, "n_voxels": n_vox, "curve": curve}

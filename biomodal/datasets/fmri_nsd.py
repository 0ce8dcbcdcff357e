"""Preparer for the Natural Scenes Dataset (NSD) layout the ``fmri`` family reads (bring your data).

NSD's ``nsd_expdesign.mat`` holds ``masterordering`` (the 30,000 trials of the experiment, each
an index 1..10,000 into the subject's image list), ``subjectim`` (8 x 10,000: each subject's list
of 73k image ids, 1-based) and ``sharedix`` (the 1,000 73k ids every subject saw, 1-based).
Trial ``t`` (0-based) of the experiment is trial ``t mod 750`` of session ``t // 750 + 1``.

:func:`prepare_nsd_events` writes, for each subject, one ``betas_sessionNN_events.tsv`` per
session (columns ``volume``, ``stimulus``: the 0-based 73k id) beside where its
``betas_sessionNN.nii.gz`` go, and ``stimuli.tsv`` (``stimulus``, ``shared``). The beta files
themselves are linked, not copied, when ``betas_dir`` is given. See ``datasets/fmri_nsd.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._atomic import atomic_write_text
from biomodal.errors import DataError

__all__ = ["TRIALS_PER_SESSION", "nsd_trial_table", "prepare_nsd_events"]

TRIALS_PER_SESSION = 750


def nsd_trial_table(expdesign: dict[str, Any], subject: int) -> np.ndarray:
    """0-based 73k image id of every trial of ``subject`` (1..8), in experiment order."""
    try:
        order = np.asarray(expdesign["masterordering"]).ravel().astype(np.int64)
        subjectim = np.atleast_2d(np.asarray(expdesign["subjectim"])).astype(np.int64)
    except KeyError as exc:
        raise DataError(f"nsd_expdesign: missing variable {exc} (needs masterordering, subjectim)") from None
    if not 1 <= subject <= subjectim.shape[0]:
        raise DataError(f"NSD subject {subject} not in 1..{subjectim.shape[0]}")
    if order.min() < 1 or order.max() > subjectim.shape[1]:
        raise DataError(f"nsd_expdesign: masterordering values must be in 1..{subjectim.shape[1]}")
    return subjectim[subject - 1, order - 1] - 1


def prepare_nsd_events(
    expdesign_mat: str | os.PathLike,
    out: str | os.PathLike,
    *,
    subjects: Sequence[int] = (1, 2, 5, 7),
    sessions: dict[int, int] | None = None,
    betas_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the events tables (and ``stimuli.tsv``) of NSD subjects for the ``fmri`` family.

    Parameters
    ----------
    expdesign_mat
        ``nsd_expdesign.mat`` (read with :func:`scipy.io.loadmat`).
    out
        Data root of the recipe; ``subjNN/`` folders are created in it.
    subjects
        NSD subjects (default: the four who completed all 40 sessions).
    sessions
        ``{subject: number of sessions}`` (default 40 each, as many as the trials allow).
    betas_dir
        Optional folder with ``subjNN/betas_sessionSS.nii.gz`` (NSD's ``betas_fithrf_GLMdenoise_RR``
        per subject); each one found is symlinked next to its events table.

    Returns
    -------
    dict
        ``{"subjects": {...: sessions written}, "n_shared": ...}``.
    """
    from scipy.io import loadmat

    design = loadmat(os.fspath(expdesign_mat))
    out = Path(out)
    written: dict[str, int] = {}
    for subj in subjects:
        ids = nsd_trial_table(design, subj)
        n_sess = (sessions or {}).get(subj, len(ids) // TRIALS_PER_SESSION)
        folder = out / f"subj{subj:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(1, n_sess + 1):
            rows = ids[(s - 1) * TRIALS_PER_SESSION : s * TRIALS_PER_SESSION]
            if len(rows) < TRIALS_PER_SESSION:
                raise DataError(f"subject {subj}: session {s} has {len(rows)} trials in {expdesign_mat}")
            body = "".join(f"{t}\t{i}\n" for t, i in enumerate(rows))
            atomic_write_text(folder / f"betas_session{s:02d}_events.tsv", "volume\tstimulus\n" + body)
            if betas_dir is not None:
                src = Path(betas_dir) / f"subj{subj:02d}" / f"betas_session{s:02d}.nii.gz"
                dst = folder / src.name
                if src.is_file() and not dst.exists():
                    dst.symlink_to(src.resolve())
        written[f"subj{subj:02d}"] = n_sess
    shared = np.asarray(design.get("sharedix", np.zeros((1, 0)))).ravel().astype(np.int64) - 1
    seen = sorted({int(i) for s in subjects for i in nsd_trial_table(design, s)})
    shared_set = set(shared.tolist())
    atomic_write_text(
        out / "stimuli.tsv", "stimulus\tshared\n" + "".join(f"{i}\t{int(i in shared_set)}\n" for i in seen)
    )
    return {"subjects": written, "n_shared": len(shared_set)}

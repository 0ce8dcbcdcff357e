"""Generated patients with known conditions: chest X-ray, 12-lead ECG, report and labs (MoRE-style).

Four latent conditions drive what each modality shows:

======================  ==========================================  =====================================
condition               shown by                                    how
======================  ==========================================  =====================================
cardiomegaly            X-ray, report, labs (NT-proBNP)             cardiothoracic ratio > 0.5
pleural_effusion        X-ray, report, labs (NT-proBNP)             fluid level in one or both lung bases
atrial_fibrillation     ECG, report, labs (heart rate)              no P waves, irregular RR, f-waves
myocardial_infarction   ECG, report, labs (troponin)                deep Q waves, inverted T waves
======================  ==========================================  =====================================

Conditions are correlated as in practice: a latent cardiac risk (rising with age) raises the
odds of every one, atrial fibrillation is more common with cardiomegaly, effusion with
cardiomegaly. Beyond the conditions, continuous per-patient quantities are shared between
modalities, so that instance-level retrieval is possible: the cardiothoracic ratio (X-ray and
NT-proBNP), the heart rate (ECG and the labs' heart rate), the infarct size (Q/T depth is not
varied; troponin) and the age (labs; risk). Images come from
:mod:`biomodal.datasets._cxr_synth`, ECGs from neurokit2's ECGSYN
(:mod:`biomodal.datasets._ecg_synth`), report sentences from the real IU X-ray reports chosen by
MeSH term (:mod:`biomodal.datasets._report_synth`).

Each modality is missing for a share of the patients (``missing``), with at least
``min_present`` modalities kept per patient, as in clinical data where not every patient has
every test.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["CONDITIONS", "LAB_NAMES", "MODALITIES", "make_clinical_patients"]

CONDITIONS = ("cardiomegaly", "pleural_effusion", "atrial_fibrillation", "myocardial_infarction")
MODALITIES = ("xray", "ecg", "report", "labs")
LAB_NAMES = ("age", "sex", "nt_probnp_log", "troponin_log", "heart_rate", "creatinine", "sodium")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _conditions(n: int, rng: np.random.Generator, prevalence: float) -> dict[str, np.ndarray]:
    age = rng.normal(62, 13, n).clip(20, 95)
    risk = 0.045 * (age - 62) + rng.normal(0, 1, n)
    base = np.log(prevalence / (1 - prevalence))
    cm = rng.random(n) < _sigmoid(base + 0.9 * risk)
    eff = rng.random(n) < _sigmoid(base - 0.3 + 0.5 * risk + 1.2 * cm)
    af = rng.random(n) < _sigmoid(base - 0.2 + 0.6 * risk + 1.0 * cm)
    mi = rng.random(n) < _sigmoid(base - 0.2 + 0.8 * risk)
    return {
        "age": age,
        "cardiomegaly": cm,
        "pleural_effusion": eff,
        "atrial_fibrillation": af,
        "myocardial_infarction": mi,
    }


def _presence(n: int, missing: Mapping[str, float], min_present: int, rng: np.random.Generator) -> dict:
    present = {m: rng.random(n) >= float(missing.get(m, 0.0)) for m in MODALITIES}
    stack = np.stack([present[m] for m in MODALITIES], axis=1)
    for i in np.flatnonzero(stack.sum(1) < min_present):  # restore random absent ones
        absent = np.flatnonzero(~stack[i])
        need = min_present - int(stack[i].sum())
        stack[i, rng.choice(absent, need, replace=False)] = True
    return {m: stack[:, j] for j, m in enumerate(MODALITIES)}


def make_clinical_patients(
    n: int,
    *,
    seed: int = 0,
    image_px: int = 64,
    sampling_rate: int = 100,
    duration_s: float = 10.0,
    prevalence: float = 0.3,
    missing: Mapping[str, float] | None = None,
    min_present: int = 2,
    reports: str | Path | Mapping[str, Any] | None = "builtin",
    ecg_bank_size: int = 6,
    mention: float = 0.85,
) -> dict[str, Any]:
    """Draw ``n`` patients with the four modalities, their conditions and missingness.

    Parameters
    ----------
    n
        Patients.
    seed
        Seed of everything but the ECG bank (whose seed is fixed: the bank is shared by runs).
    image_px
        X-ray side in pixels.
    sampling_rate, duration_s
        ECG sampling rate (Hz) and length (s).
    prevalence
        Baseline prevalence of each condition (before the risk and co-morbidity terms).
    missing
        ``{modality: probability of being absent}`` (default: xray 0.2, ecg 0.2, report 0.1, labs 0.3).
    min_present
        Least modalities per patient (1-4).
    reports
        Folder of IU X-ray XML reports for the X-ray sentences, ``"builtin"``, or the pools
        :func:`~biomodal.datasets._report_synth.sentence_pools` returned (read once for several draws).
    ecg_bank_size
        ECGSYN records per ECG state (see :func:`~biomodal.datasets._ecg_synth.simulate_ecg_bank`).
    mention
        Probability that a report mentions each finding.

    Returns
    -------
    dict
        ``xray`` ``(n, 1, px, px)`` uint8, ``ecg`` ``(n, 12, samples)`` float32 (mV), ``report``
        (list of str), ``labs`` ``(n, 7)`` float32 (NaN where a value is missing;
        :data:`LAB_NAMES`), ``present`` ``{modality: (n,) bool}``, ``conditions`` ``(n, 4)``
        0/1 (:data:`CONDITIONS`), and ``obs`` (a DataFrame: patient id, conditions, ctr, heart
        rate, age, sex).
    """
    import pandas as pd

    from biomodal.datasets._cxr_synth import chest_images
    from biomodal.datasets._ecg_synth import ecg_from_bank, simulate_ecg_bank
    from biomodal.datasets._report_synth import compose_reports, sentence_pools

    if n < 1:
        raise ConfigError(f"make_clinical_patients: n={n} must be >= 1")
    if not 1 <= min_present <= len(MODALITIES):
        raise ConfigError(f"make_clinical_patients: min_present={min_present} must be in 1-{len(MODALITIES)}")
    if not 0 < prevalence < 1:
        raise ConfigError(f"make_clinical_patients: prevalence={prevalence} must be in (0, 1)")
    miss = {"xray": 0.2, "ecg": 0.2, "report": 0.1, "labs": 0.3} if missing is None else dict(missing)
    bad = {m: p for m, p in miss.items() if m not in MODALITIES or not 0 <= float(p) < 1}
    if bad:
        raise ConfigError(
            f"make_clinical_patients: missing {bad}: keys must be {MODALITIES}, values in [0, 1)"
        )
    rng = np.random.default_rng([int(seed), 11])
    c = _conditions(n, rng, prevalence)
    cm, eff, af, mi = (c[k].astype(np.int64) for k in CONDITIONS)
    ctr = np.where(cm, rng.uniform(0.52, 0.66, n), rng.uniform(0.36, 0.48, n))
    eff_h = np.where(eff, rng.uniform(0.2, 0.5, n), 0.0)
    xray = chest_images(ctr, eff_h, rng.integers(0, 3, n), px=image_px, seed=rng)
    bank = simulate_ecg_bank(ecg_bank_size, sampling_rate=sampling_rate, seed=0)
    ecg, hr = ecg_from_bank(
        bank, af, mi, rng.uniform(0.85, 1.2, n), duration_s=duration_s, sampling_rate=sampling_rate, seed=rng
    )
    pools = reports if isinstance(reports, Mapping) else sentence_pools(reports)
    texts = compose_reports({k: c[k] for k in CONDITIONS}, pools, mention=mention, seed=rng)
    sex = (rng.random(n) < 0.5).astype(np.float64)
    infarct = np.where(mi, rng.gamma(2.0, 1.0, n), 0.0)
    labs = np.stack(
        [
            c["age"] + rng.normal(0, 1, n),
            sex,
            5.0 + 4.0 * (ctr - 0.42) / 0.2 + 0.8 * eff_h / 0.3 + 0.4 * af + rng.normal(0, 0.5, n),
            -3.0 + 1.2 * infarct + rng.normal(0, 0.4, n),
            hr + rng.normal(0, 3, n),
            0.9 + 0.006 * (c["age"] - 62) + 0.15 * sex + 0.1 * eff_h + rng.gamma(2, 0.05, n),
            140 + rng.normal(0, 2.5, n) - 3 * eff_h,
        ],
        axis=1,
    )
    labs[rng.random(labs.shape) < 0.1] = np.nan  # single values missing (not ordered)
    present = _presence(n, miss, min_present, rng)
    obs = pd.DataFrame(
        {
            "patient_id": [f"P{seed}_{i:05d}" for i in range(n)],
            **{k: c[k].astype(np.int8) for k in CONDITIONS},
            "ctr": ctr,
            "effusion_height": eff_h,
            "heart_rate": hr,
            "age": c["age"],
            "sex": sex.astype(np.int8),
            **{f"has_{m}": present[m] for m in MODALITIES},
        },
    )
    obs.index = obs["patient_id"].to_numpy()
    conds = np.stack([c[k] for k in CONDITIONS], axis=1).astype(np.float32)
    return {
        "xray": xray,
        "ecg": ecg.astype(np.float32),
        "report": texts,
        "labs": labs.astype(np.float32),
        "present": present,
        "conditions": conds,
        "obs": obs,
    }

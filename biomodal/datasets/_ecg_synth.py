"""12-lead ECGs with a known rhythm and morphology, simulated with neurokit2's ECGSYN.

NeuroKit2's ``ecg_simulate(method="multileads")`` integrates McSharry et al.'s (2003) ECGSYN
dynamical model: a limit cycle whose five Gaussian events (P, Q, R, S, T; angles ``ti``,
amplitudes ``ai``, widths ``bi``) trace one beat per turn, with beat-to-beat intervals from an
RR process of mean ``heart_rate`` and spread ``heart_rate_std``; twelve leads come from
per-lead amplitude factors. Four ECG states are simulated:

* **sinus rhythm**: the model's defaults, 55-85 bpm, small RR variability;
* **atrial fibrillation**: no P wave (``ai[P] = 0``), 95-130 bpm, an irregular RR series
  (``heart_rate_std`` 12 bpm), plus fibrillatory waves (4-8 Hz, about 0.05 mV) added to every
  lead;
* **old myocardial infarction**: a pathological Q wave (``ai[Q]`` -5 -> -14), lower R and
  inverted T waves (``ai[T]`` 0.75 -> -0.6);
* both.

ECGSYN integrates an ODE per lead (about 1 s per 12-lead record), so a *bank* of
``bank_size`` long records per state is simulated once (kept in memory and in
``$BIOMODAL_CACHE_DIR/ecg_bank``); each patient's ECG is a random window of a record of its
state, time-scaled to the patient's own heart rate, with per-lead gain, baseline wander and
noise.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from biomodal._atomic import atomic_path
from biomodal.errors import DataError

__all__ = ["ECG_STATES", "ecg_from_bank", "simulate_ecg_bank"]

log = logging.getLogger("biomodal")

#: ``(atrial fibrillation, myocardial infarction)`` states, in bank order.
ECG_STATES = ((0, 0), (1, 0), (0, 1), (1, 1))
_TI = (-70.0, -15.0, 0.0, 15.0, 100.0)
_BI = (0.25, 0.1, 0.1, 0.1, 0.4)
_BANK_S = 16.0  # seconds per bank record (a 10 s window at up to 1.2x time scaling, plus offset)
_MEMO: dict[str, dict[str, np.ndarray]] = {}


def _wave_amplitudes(af: int, mi: int) -> tuple[float, ...]:
    p, q, r, s, t = 1.2, -5.0, 30.0, -7.5, 0.75
    if af:
        p = 0.0
    if mi:
        q, r, t = -14.0, 22.0, -0.6
    return (p, q, r, s, t)


def _cache_dir() -> Path:
    base = os.environ.get("BIOMODAL_CACHE_DIR") or Path.home() / ".cache" / "biomodal"
    return Path(base) / "ecg_bank"


def simulate_ecg_bank(
    bank_size: int = 6, *, sampling_rate: int = 100, seed: int = 0, cache: bool = True
) -> dict[str, np.ndarray]:
    """Simulate (or load) ``bank_size`` 12-lead records of each ECG state.

    Parameters
    ----------
    bank_size
        Records per state.
    sampling_rate
        Hz.
    seed
        Seed of the simulations.
    cache
        Keep the bank in ``$BIOMODAL_CACHE_DIR/ecg_bank`` (or ``~/.cache/biomodal``).

    Returns
    -------
    dict
        ``signals`` ``(4 * bank_size, 12, samples)`` float32 (mV), ``state`` ``(4 * bank_size,
        2)`` (af, mi) and ``heart_rate`` ``(4 * bank_size,)`` (the record's mean rate, bpm).
    """
    import neurokit2  # noqa: F401  (a clear ImportError before any work)

    key = hashlib.sha1(f"v1-{bank_size}-{sampling_rate}-{seed}-{_BANK_S}".encode()).hexdigest()[:16]
    if key in _MEMO:
        return _MEMO[key]
    path = _cache_dir() / f"{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                bank = {k: z[k] for k in ("signals", "state", "heart_rate")}
            _MEMO[key] = bank
            return bank
        except (OSError, ValueError, KeyError):
            log.warning("ECG bank %s is unreadable; simulating it again", path)
    bank = _simulate(bank_size, sampling_rate, seed)
    if cache:
        try:
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, **bank)
        except OSError as exc:  # a read-only cache folder costs time, not correctness
            log.warning("cannot keep the ECG bank in %s (%s)", path, exc)
    _MEMO[key] = bank
    return bank


def _simulate(bank_size: int, fs: int, seed: int) -> dict[str, np.ndarray]:
    import neurokit2 as nk

    rng = np.random.default_rng([seed, 7])
    n = round(_BANK_S * fs)
    sigs, states, rates = [], [], []
    t = np.arange(n) / fs
    for af, mi in ECG_STATES:
        for _ in range(bank_size):
            hr = float(rng.uniform(95, 130) if af else rng.uniform(55, 85))
            ecg = nk.ecg_simulate(
                duration=_BANK_S,
                sampling_rate=fs,
                heart_rate=hr,
                heart_rate_std=12.0 if af else 2.0,
                method="multileads",
                noise=0.0,
                random_state=int(rng.integers(2**31)),
                ti=_TI,
                ai=_wave_amplitudes(af, mi),
                bi=_BI,
            )
            x = np.asarray(ecg, np.float64).T[:, :n]
            if af:  # fibrillatory waves: a few 4-8 Hz components, their own phase per lead
                for _ in range(3):
                    f = rng.uniform(4, 8)
                    x += rng.uniform(0.02, 0.04) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (12, 1)))
            sigs.append(x.astype(np.float32))
            states.append((af, mi))
            rates.append(hr)
    return {"signals": np.stack(sigs), "state": np.asarray(states, np.int8), "heart_rate": np.asarray(rates)}


def ecg_from_bank(
    bank: dict[str, np.ndarray],
    af: np.ndarray,
    mi: np.ndarray,
    rate_factor: np.ndarray,
    *,
    duration_s: float = 10.0,
    sampling_rate: int = 100,
    noise: float = 0.02,
    seed: int | np.random.Generator = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """One ECG per patient: a window of a bank record of its state, time-scaled, with noise.

    Parameters
    ----------
    bank
        :func:`simulate_ecg_bank`'s output (same ``sampling_rate``).
    af, mi
        ``(n,)`` 0/1 states.
    rate_factor
        ``(n,)`` heart-rate multipliers (0.85-1.2): the window lasts ``duration_s * factor``
        seconds of the record and is resampled to ``duration_s`` seconds.
    duration_s, sampling_rate
        Output length.
    noise
        Standard deviation of the white noise (mV).
    seed
        Seed or generator.

    Returns
    -------
    tuple
        ``(signals (n, 12, samples) float32, heart_rate (n,) bpm)``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    af, mi = np.asarray(af, np.int64), np.asarray(mi, np.int64)
    f = np.asarray(rate_factor, np.float64)
    n, out_len = len(af), round(duration_s * sampling_rate)
    sig, state = bank["signals"], bank["state"]
    total = sig.shape[2]
    if np.any(f * out_len > total - 1) or np.any(f <= 0):
        raise DataError(
            f"ecg_from_bank: rate factors {f.min():.2f}-{f.max():.2f} need windows longer than "
            f"the bank's {total / sampling_rate:.0f} s records"
        )
    out = np.empty((n, 12, out_len), np.float32)
    hr = np.empty(n)
    t_out = np.arange(out_len)
    for i in range(n):
        pool = np.flatnonzero((state[:, 0] == af[i]) & (state[:, 1] == mi[i]))
        if len(pool) == 0:
            raise DataError(f"ecg_from_bank: the bank has no record of state af={af[i]}, mi={mi[i]}")
        r = int(rng.choice(pool))
        span = f[i] * out_len
        start = rng.uniform(0, total - 1 - span)
        pos = start + t_out * f[i]
        lo = np.floor(pos).astype(np.int64)
        w = (pos - lo)[None]
        x = sig[r][:, lo] * (1 - w) + sig[r][:, lo + 1] * w
        x = x * rng.uniform(0.85, 1.15, (12, 1))
        x += 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t_out / sampling_rate + rng.uniform(0, 6.3))
        out[i] = x + rng.normal(0, noise, x.shape)
        hr[i] = bank["heart_rate"][r] * f[i]
    return out, hr

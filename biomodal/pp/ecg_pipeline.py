"""ECG -> fixed-shape model input: :class:`ECGPipeline` chains the steps of :mod:`biomodal.pp.ecg`.

The pipeline records its settings (``state_dict``) so a checkpoint can reproduce the
preprocessing exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError
from biomodal.io._ecg import ECG, STANDARD_LEADS
from biomodal.pp.ecg import (
    bandpass,
    crop_or_pad,
    fill_nan,
    notch,
    remove_baseline,
    resample,
    to_standard_leads,
)

__all__ = ["ECGPipeline"]


@dataclass
class ECGPipeline:
    """ECG -> fixed-shape model input: leads reordered, baseline removed, filtered, resampled, cut.

    Steps, in this order: NaN interpolation; :func:`to_standard_leads` (mask of absent leads);
    :func:`remove_baseline`; :func:`bandpass`; :func:`notch`; :func:`resample` to ``fs``;
    :func:`crop_or_pad` to ``duration_s``; optional per-record standardisation of each present
    lead (zero mean, unit variance; absent leads stay zero).

    Parameters
    ----------
    fs
        Output sampling rate in Hz.
    duration_s
        Output length in seconds (``round(fs * duration_s)`` samples).
    bandpass
        ``(low, high)`` in Hz or ``None``; ``high`` is lowered to 45 % of the input rate where
        the input is sampled too slowly for it.
    notch
        Mains frequency to remove (50 or 60) or ``None``.
    baseline
        ``"median"``, ``"highpass"`` or ``None``.
    leads
        Output lead order.
    derive_limb
        See :func:`to_standard_leads`.
    crop
        ``"center"``, ``"start"`` or ``"random"`` (see :func:`crop_or_pad`).
    standardize
        ``"record"`` (per record and lead) or ``None``.

    Examples
    --------
    >>> pipe = ECGPipeline(fs=100, duration_s=10)
    >>> x, mask = pipe(read_wfdb("ptbxl/records500/00000/00001_hr"))  # doctest: +SKIP
    >>> x.shape, mask.all()  # doctest: +SKIP
    ((12, 1000), True)
    """

    fs: float = 100.0
    duration_s: float = 10.0
    bandpass: tuple[float | None, float | None] | None = (0.5, 40.0)
    notch: float | None = None
    baseline: str | None = "median"
    leads: tuple[str, ...] = field(default_factory=lambda: STANDARD_LEADS)
    derive_limb: bool = False
    crop: str = "center"
    standardize: str | None = None

    def __post_init__(self) -> None:
        self.leads = tuple(self.leads)
        if self.bandpass is not None:
            self.bandpass = tuple(self.bandpass)  # type: ignore[assignment]
        if self.standardize not in (None, "record"):
            raise ConfigError(f"standardize must be 'record' or None, got {self.standardize!r}")
        if self.baseline not in (None, "median", "highpass"):
            raise ConfigError(f"baseline must be 'median', 'highpass' or None, got {self.baseline!r}")

    @property
    def n_samples(self) -> int:
        """Output length in samples."""
        return round(self.fs * self.duration_s)

    def __call__(self, ecg: ECG, *, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Preprocess one recording.

        Returns
        -------
        signal : numpy.ndarray
            ``(len(leads), n_samples)`` float32.
        mask : numpy.ndarray
            ``(len(leads),)`` bool, ``True`` for recorded leads.
        """
        x, mask = to_standard_leads(
            fill_nan(ecg.signal), ecg.leads, order=self.leads, derive_limb=self.derive_limb
        )
        fs = ecg.fs
        if self.baseline is not None:
            x = remove_baseline(x, fs, method=self.baseline)
        if self.bandpass is not None:
            low, high = self.bandpass
            if high is not None:
                high = min(high, 0.45 * fs)
            x = bandpass(x, fs, low=low, high=high)
        if self.notch is not None and self.notch < fs / 2:
            x = notch(x, fs, freq=self.notch)
        x = resample(x, fs, self.fs)
        x = crop_or_pad(x, self.n_samples, mode=self.crop, rng=rng)
        if self.standardize == "record":
            mu = x.mean(axis=1, keepdims=True)
            sd = x.std(axis=1, keepdims=True)
            x = np.where(mask[:, None], (x - mu) / np.where(sd > 1e-8, sd, 1.0), 0.0)
        return np.ascontiguousarray(x, dtype=np.float32), mask

    def stack(
        self, items: Iterable[ECG | str | os.PathLike], *, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Preprocess many recordings into one array.

        Parameters
        ----------
        items
            :class:`~biomodal.io.ECG` objects or paths: a WFDB record path without suffix (as in
            the PTB-XL and MIMIC-IV-ECG indexes, read with :func:`~biomodal.io.read_wfdb`) or any
            file the reader registry reads as an ECG.
        rng
            Generator for ``crop="random"``.

        Returns
        -------
        signals : numpy.ndarray
            ``(n, len(leads), n_samples)`` float32.
        masks : numpy.ndarray
            ``(n, len(leads))`` bool.
        """
        from biomodal.io._wfdb import read_wfdb
        from biomodal.io.registry import read

        xs, ms = [], []
        for item in items:
            if not isinstance(item, ECG):
                p = Path(item)
                item = read_wfdb(p) if not p.exists() and p.with_name(p.name + ".hea").is_file() else read(p)
            x, m = self(item, rng=rng)
            xs.append(x)
            ms.append(m)
        if not xs:
            return np.zeros((0, len(self.leads), self.n_samples), np.float32), np.zeros(
                (0, len(self.leads)), bool
            )
        return np.stack(xs), np.stack(ms)

    def state_dict(self) -> dict[str, Any]:
        """Return the settings as plain Python values (JSON/YAML serialisable)."""
        d = asdict(self)
        d["leads"] = list(self.leads)
        d["bandpass"] = list(self.bandpass) if self.bandpass is not None else None
        return d

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ECGPipeline:
        """Rebuild from :meth:`state_dict` (unknown keys raise :class:`~biomodal.errors.ConfigError`)."""
        allowed = set(cls.__dataclass_fields__)
        bad = sorted(set(state) - allowed)
        if bad:
            raise ConfigError(f"unknown ECGPipeline settings {bad}; allowed: {sorted(allowed)}")
        return cls(**state)

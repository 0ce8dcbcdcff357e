"""Clinical records in memory: the dataset, the text source, per-record scaling, ECG features.

One :class:`ClinicalDataset` holds the records of one split: preprocessed 12-lead ECGs
``(n, 12, samples)`` with their lead masks, the text of each record (the free-text report or
the statements built from its labels), standardised labs ``[z-scores, missing indicators]``,
one presence flag per modality and an ``obs`` DataFrame. :func:`ecg_features` computes the
hand-made ECG baseline (per-lead amplitude percentiles, band powers and a heart-rate proxy),
the field's cheap floor that a learned ECG embedding must beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biomodal.errors import CheckpointError, DataError
from biomodal.modalities import mask_key

__all__ = ["ClinicalDataset", "TextSource", "ecg_feature_names", "ecg_features", "standardize_records"]

#: Amplitude percentiles per lead.
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: Frequency bands (Hz) whose log power per lead is a feature (clipped to the Nyquist rate).
BANDS = ((0.5, 3.0), (3.0, 8.0), (8.0, 15.0), (15.0, 25.0), (25.0, 40.0))
#: Text sources of PTB-XL records: ``data.text`` value -> index column.
TEXT_COLUMNS = {"report": "report_clean", "statements": "statements"}


class TextSource:
    """Where the text modality of a record comes from (``report`` or ``statements``).

    Nothing is fitted (the text encoder tokenises the strings itself); the source is recorded
    so that a checkpoint knows which text its model was trained on.

    Parameters
    ----------
    source
        ``"report"`` (PTB-XL's free text, normalised) or ``"statements"`` (English text built
        from ``scp_codes``: it encodes the labels).
    """

    def __init__(self, source: str = "report") -> None:
        if source not in TEXT_COLUMNS:
            raise DataError(f"text source {source!r} not in {sorted(TEXT_COLUMNS)}")
        self.source = source

    @property
    def column(self) -> str:
        """Column of the PTB-XL index holding the text."""
        return TEXT_COLUMNS[self.source]

    @property
    def from_labels(self) -> bool:
        """Whether the text was generated from the diagnostic labels (then not zero-shot)."""
        return self.source == "statements"

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state."""
        return {"source": self.source}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], name: str = "report") -> TextSource:
        """Inverse of :meth:`state_dict`; :class:`CheckpointError` naming the modality when malformed."""
        try:
            return cls(str(state["source"]))
        except (KeyError, TypeError, DataError) as exc:
            raise CheckpointError(
                f"checkpoint modality {name!r}: text source state is malformed ({exc!r})"
            ) from exc

    def __repr__(self) -> str:
        return f"TextSource({self.source!r})"


def standardize_records(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per record and lead zero mean, unit variance (absent leads zero), as ``ECGPipeline`` does.

    Parameters
    ----------
    x
        ``(n, leads, samples)`` signals.
    mask
        ``(n, leads)`` bool, True for recorded leads.
    """
    mu = x.mean(axis=2, keepdims=True)
    sd = x.std(axis=2, keepdims=True)
    out = np.where(mask[:, :, None], (x - mu) / np.where(sd > 1e-8, sd, 1.0), 0.0)
    return out.astype(np.float32)


def ecg_feature_names(leads: Sequence[str]) -> list[str]:
    """Column names of :func:`ecg_features` for these leads."""
    per = [f"p{q}" for q in PERCENTILES] + ["ptp", "std"] + [f"logpow_{a:g}_{b:g}Hz" for a, b in BANDS]
    return [f"{lead}:{p}" for lead in leads for p in per] + ["rr_s"]


def ecg_features(x: np.ndarray, mask: np.ndarray, fs: float) -> np.ndarray:
    """Hand-made ECG features: per-lead amplitude percentiles, spread, band powers; a rate proxy.

    Per lead: the 1, 5, 25, 50, 75, 95 and 99th amplitude percentiles, peak-to-peak and standard
    deviation (in the units of ``x``, mV from the pipeline) and the log power in the bands of
    :data:`BANDS` (Welch periodogram, 2 s segments); plus one dominant beat period (``rr_s``: the
    lag in 0.3-2 s maximising the autocorrelation of the summed absolute slope of all leads).
    Absent leads give NaN columns (the probe imputes the training mean).

    Parameters
    ----------
    x
        ``(n, leads, samples)`` signals (not standardised per record: amplitude matters).
    mask
        ``(n, leads)`` bool.
    fs
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``(n, leads * 14 + 1)`` float32 (see :func:`ecg_feature_names`).
    """
    from scipy.signal import welch

    x = np.asarray(x, np.float64)
    n, leads, samples = x.shape
    if n == 0:
        return np.zeros((0, leads * (len(PERCENTILES) + 2 + len(BANDS)) + 1), np.float32)
    pct = np.percentile(x, PERCENTILES, axis=2).transpose(1, 2, 0)  # (n, leads, 7)
    ptp = (x.max(axis=2) - x.min(axis=2))[..., None]
    std = x.std(axis=2)[..., None]
    freqs, psd = welch(x, fs=fs, nperseg=min(samples, int(2 * fs)), axis=2)
    bands = []
    for lo, hi in BANDS:
        sel = (freqs >= lo) & (freqs < min(hi, fs / 2))
        power = psd[..., sel].sum(axis=-1) if sel.any() else np.zeros((n, leads))
        bands.append(np.log(power + 1e-10))
    per_lead = np.concatenate([pct, ptp, std, np.stack(bands, axis=-1)], axis=2)
    per_lead[~np.asarray(mask, bool)] = np.nan
    slope = np.abs(np.diff(np.where(np.asarray(mask, bool)[:, :, None], x, 0.0), axis=2)).sum(axis=1)
    slope = slope - slope.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(slope, n=2 * slope.shape[1], axis=1)
    acf = np.fft.irfft(spec * np.conj(spec), axis=1)[:, : slope.shape[1]]
    lo, hi = int(0.3 * fs), min(int(2.0 * fs), slope.shape[1] - 1)
    rr = (lo + np.argmax(acf[:, lo:hi], axis=1)) / fs if hi > lo else np.full(n, np.nan)
    return np.concatenate([per_lead.reshape(n, -1), rr[:, None]], axis=1).astype(np.float32)


class ClinicalDataset:
    """Records of one split: ECG, text and labs with presence flags, targets and ``obs``.

    Items are batch dicts ``{"ecg": float32 (12, samples), "report": str, "labs": float32 (2F,),
    "xray": uint8 (C, H, W) (pixel modalities), <name>_mask: bool (only for modalities some
    record of the split lacks), "index": int64}``.
    When some record lacks a lead, ``"ecg"`` is ``{"signal": (12, samples), "lead_mask": (12,)}``
    instead (what the ECG encoders read). The default collate turns the strings into a list, which
    the text encoder tokenises.

    Parameters
    ----------
    obs
        Per-record metadata (index = record ids), one row per record.
    ecg, lead_mask
        ``(n, 12, samples)`` float32 signals and ``(n, 12)`` bool lead masks, or ``None``.
    texts
        ``n`` strings, or ``None``.
    labs
        ``(n, 2F)`` float32 standardised values and missing indicators, or ``None``.
    present
        ``{modality: (n,) bool}``.
    text_modality
        Batch key of the text (``"report"``).
    images
        ``{modality: (n, C, H, W) or (n, C, D, H, W) uint8}`` pixel modalities (``"xray"``,
        ``"volume"``), or ``None``.
    """

    def __init__(
        self,
        obs: Any,
        *,
        ecg: np.ndarray | None = None,
        lead_mask: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
        labs: np.ndarray | None = None,
        present: Mapping[str, np.ndarray],
        text_modality: str = "report",
        images: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        import torch

        n = len(obs)
        self.obs = obs
        self.text_modality = text_modality
        self._data: dict[str, Any] = {}
        if ecg is not None:
            if ecg.shape[0] != n or lead_mask is None or lead_mask.shape != (n, ecg.shape[1]):
                raise DataError(f"ClinicalDataset: ECG array {ecg.shape} does not match {n} records")
            self._data["ecg"] = torch.as_tensor(np.ascontiguousarray(ecg, np.float32))
            self._lead_mask = torch.as_tensor(np.asarray(lead_mask, bool))
            self._with_leads = not bool(np.asarray(lead_mask).all())
        if texts is not None:
            if len(texts) != n:
                raise DataError(f"ClinicalDataset: {len(texts)} texts for {n} records")
            self._data[text_modality] = [str(t) for t in texts]
        if labs is not None:
            if labs.shape[0] != n:
                raise DataError(f"ClinicalDataset: labs {labs.shape} do not match {n} records")
            self._data["labs"] = torch.as_tensor(np.asarray(labs, np.float32))
        for m, img in (images or {}).items():
            if img.shape[0] != n or img.ndim not in (4, 5):
                raise DataError(
                    f"ClinicalDataset: {m} pixels {img.shape} are not (n={n}, C, H, W) or (n, C, D, H, W)"
                )
            self._data[m] = torch.as_tensor(np.ascontiguousarray(img))
        self.modalities = tuple(self._data)
        self.present = {m: np.asarray(present[m], bool) for m in self.modalities}
        bad = [m for m, p in self.present.items() if p.shape != (n,)]
        if bad:
            raise DataError(f"ClinicalDataset: presence flags of {bad} do not have {n} rows")
        self._masks = {m: torch.as_tensor(p) for m, p in self.present.items() if not p.all()}

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.item(i)

    def item(self, i: int, *, skip: Sequence[str] = ()) -> dict[str, Any]:
        """Record ``i`` without the modalities in ``skip`` (the feature cache supplies them)."""
        import torch

        item: dict[str, Any] = {}
        for m, v in self._data.items():
            if m in skip:
                continue
            if m == "ecg" and self._with_leads:
                item[m] = {"signal": v[i], "lead_mask": self._lead_mask[i]}
            else:
                item[m] = v[i]
        item.update({mask_key(m): v[i] for m, v in self._masks.items()})
        item["index"] = torch.tensor(i)
        return item

    def feature_cache_key(self, modality: str) -> dict[str, Any] | None:
        """Describe the ``modality`` input of every record: a hash of its values (nothing is random)."""
        import hashlib

        if modality not in self._data:
            return None
        h = hashlib.sha1()
        v = self._data[modality]
        if isinstance(v, list):
            for t in v:
                h.update(t.encode("utf-8") + b"\0")
        else:
            h.update(v.numpy().tobytes())
            if modality == "ecg":
                h.update(self._lead_mask.numpy().tobytes())
        h.update(self.present[modality].tobytes())
        return {"modality": modality, "sha1": h.hexdigest(), "shape": list(getattr(v, "shape", [len(v)]))}

    def texts(self) -> list[str]:
        """Return the text of every record (empty strings where absent)."""
        return list(self._data.get(self.text_modality, []))

    def __repr__(self) -> str:
        missing = {m: int((~p).sum()) for m, p in self.present.items() if not p.all()}
        shape = tuple(self._data["ecg"].shape[1:]) if "ecg" in self._data else None
        return (
            f"ClinicalDataset({len(self)} records; modalities {list(self.modalities)}; ecg {shape}; "
            f"missing {missing or 'none'})"
        )

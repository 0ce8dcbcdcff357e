"""The :class:`ECG` container, lead-name normalisation, units and arrays -> ECG.

Every ECG reader (:func:`~biomodal.io.read_wfdb`, :func:`~biomodal.io.read_ecg_dicom`,
:func:`~biomodal.io.read_ecg_npz`, :func:`ecg_from_array`) returns an :class:`ECG`:
a ``(leads, samples)`` float32 array in **millivolts**, the sampling rate in Hz and
the lead names normalised to ``I, II, III, aVR, aVL, aVF, V1 ... V6``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import DataError, ReaderError

__all__ = [
    "ECG",
    "STANDARD_LEADS",
    "ecg_from_array",
    "normalize_lead_name",
    "read_ecg_npz",
    "unit_scale_to_mv",
]

#: The standard 12-lead order (limb leads, augmented limb leads, precordial leads).
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_CANON = {name.lower(): name for name in STANDARD_LEADS}
#: Other spellings met in real files (lower-cased keys).
_ALIASES = {
    # MIT-BIH "modified" limb and chest leads (Mason-Likar placement) are read as the lead they stand for.
    "mli": "I",
    "mlii": "II",
    "mliii": "III",
    **{f"mv{i}": f"V{i}" for i in range(1, 7)},
    # Frank orthogonal leads (PTB): kept, upper-cased.
    "vx": "VX",
    "vy": "VY",
    "vz": "VZ",
    "x": "VX",
    "y": "VY",
    "z": "VZ",
}
_UNITS_TO_MV = {
    **dict.fromkeys(("mv", "millivolt", "millivolts"), 1.0),
    **dict.fromkeys(("uv", "\u00b5v", "\u03bcv", "microvolt", "microvolts"), 1e-3),
    **dict.fromkeys(("v", "volt", "volts"), 1e3),
    **dict.fromkeys(("nv", "nanovolt", "nanovolts"), 1e-6),
}
_DEFAULT_UNIT = "mv"  # WFDB: a signal line without units is in millivolts


def normalize_lead_name(name: str) -> str:
    """Map a lead label to its standard spelling, or return it stripped when it is not a known lead.

    Handles case (``"avr"``, ``"AVR"`` -> ``"aVR"``), MIT-BIH modified leads (``"MLII"`` -> ``"II"``,
    ``"MV5"`` -> ``"V5"``), DICOM code meanings (``"Lead I (Einthoven)"`` -> ``"I"``), MDC codes
    (``"MDC_ECG_LEAD_AVF"`` -> ``"aVF"``) and Frank leads (``"vx"`` -> ``"VX"``).

    Parameters
    ----------
    name
        The label found in the file.

    Returns
    -------
    str
        The normalised name (``"ECG 1"`` and other unknown labels come back stripped, unchanged).

    Examples
    --------
    >>> [normalize_lead_name(n) for n in ("MLII", "avl", "Lead V1", "ECG 1")]
    ['II', 'aVL', 'V1', 'ECG 1']
    """
    raw = str(name).strip()
    key = re.sub(r"\(.*?\)", "", raw).strip().lower()
    key = re.sub(r"^(mdc_ecg_lead_|lead[\s_-]*)", "", key).strip()
    key = key.replace(" ", "").replace("-", "")
    if key in _CANON:
        return _CANON[key]
    if key in _ALIASES:
        return _ALIASES[key]
    return raw


def unit_scale_to_mv(unit: str | None, *, source: str | os.PathLike = "", channel: str = "") -> float:
    """Factor that turns values in ``unit`` into millivolts (``"uV"`` -> 0.001).

    Parameters
    ----------
    unit
        Unit string as written in the file (``"mV"``, ``"uV"``, ``"µV"``, ``"V"``...); empty or
        ``None`` means millivolts, the WFDB default.
    source
        File named in the error message.
    channel
        Channel named in the error message.

    Returns
    -------
    float
        The multiplier.

    Raises
    ------
    DataError
        ``unit`` is not a voltage (e.g. ``"mmHg"``).
    """
    key = (unit or _DEFAULT_UNIT).strip().lower().replace(" ", "")
    if key in _UNITS_TO_MV:
        return _UNITS_TO_MV[key]
    where = f"{os.fspath(source)}: " if source else ""
    raise DataError(f"{where}channel {channel!r} is in {unit!r}, not a voltage (expected mV, uV, V)")


@dataclass(repr=False)
class ECG:
    """An ECG recording: ``(leads, samples)`` float32 millivolts, sampling rate and lead names.

    Parameters
    ----------
    signal
        Array of shape ``(n_leads, n_samples)`` in millivolts (converted to float32); invalid
        samples (WFDB's "no data" value) are NaN.
    fs
        Sampling rate in Hz.
    leads
        Normalised lead names, one per row (see :func:`normalize_lead_name`).
    raw_leads
        The labels as written in the file (same order); defaults to ``leads``.
    path
        The file read (``None`` for arrays).
    record
        Record name (WFDB record, DICOM SOP instance, PTB-XL ``ecg_id``...).
    metadata
        Whatever else the file says: comments, age/sex where given, original units, base date.

    Examples
    --------
    >>> ecg = ECG(np.zeros((2, 500)), fs=250, leads=["MLII", "V5"])
    >>> ecg
    ECG(2 leads [II, V5], 500 samples at 250 Hz (2.0 s))
    """

    signal: np.ndarray
    fs: float
    leads: Sequence[str]
    raw_leads: Sequence[str] = ()
    path: str | None = None
    record: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sig = np.asarray(self.signal, dtype=np.float32)
        where = self.path or self.record or "ECG"
        if sig.ndim != 2:
            raise DataError(f"{where}: ECG signal must be 2-D (leads, samples), got shape {sig.shape}")
        raw = tuple(str(x) for x in (self.raw_leads or self.leads))
        if len(raw) != sig.shape[0]:
            raise DataError(f"{where}: {len(raw)} lead names for {sig.shape[0]} signal rows")
        if not (np.isfinite(self.fs) and self.fs > 0):
            raise DataError(f"{where}: sampling rate must be positive, got {self.fs!r}")
        self.signal = np.ascontiguousarray(sig)
        self.fs = float(self.fs)
        self.raw_leads = raw
        self.leads = tuple(normalize_lead_name(x) for x in raw)

    @property
    def n_leads(self) -> int:
        """Number of leads (rows)."""
        return int(self.signal.shape[0])

    @property
    def n_samples(self) -> int:
        """Number of samples per lead."""
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_samples / self.fs

    def lead(self, name: str) -> np.ndarray:
        """Return the samples of one lead, looked up by normalised or raw name.

        Raises
        ------
        KeyError
            The record has no such lead (the message lists the leads it has).
        """
        want = normalize_lead_name(name)
        for i, (n, r) in enumerate(zip(self.leads, self.raw_leads, strict=True)):
            if want == n or name == r:
                return self.signal[i]
        raise KeyError(f"lead {name!r} not in {list(self.leads)}")

    def __repr__(self) -> str:
        where = f", {Path(self.path).name}" if self.path else ""
        leads = ", ".join(self.leads[:12]) + (", ..." if self.n_leads > 12 else "")
        return (
            f"ECG({self.n_leads} leads [{leads}], {self.n_samples} samples at {self.fs:g} Hz "
            f"({self.duration_s:.1f} s){where})"
        )


def ecg_from_array(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str] | None = None,
    *,
    units: str | Sequence[str] = "mV",
    layout: str = "auto",
    record: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ECG:
    """Wrap an array as an :class:`ECG`, converting units to millivolts.

    Parameters
    ----------
    signal
        2-D array, ``(leads, samples)`` or ``(samples, leads)`` (see ``layout``).
    fs
        Sampling rate in Hz.
    leads
        Lead names; default ``STANDARD_LEADS`` for 12 rows, else ``"ch0", "ch1", ...``.
    units
        Unit of all leads or one per lead (``"mV"``, ``"uV"``, ``"V"``).
    layout
        ``"leads_first"``, ``"samples_first"`` or ``"auto"`` (the shorter axis holds the leads).
    record
        Record name kept on the result.
    metadata
        Kept on the result.

    Returns
    -------
    ECG
        The recording in millivolts.

    Raises
    ------
    DataError
        Not 2-D, lead count mismatch, non-voltage units, unknown ``layout``.
    """
    arr = np.asarray(signal, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"ECG array must be 2-D, got shape {arr.shape}")
    if layout == "auto":
        layout = "leads_first" if arr.shape[0] <= arr.shape[1] else "samples_first"
    if layout == "samples_first":
        arr = arr.T
    elif layout != "leads_first":
        raise DataError(f"layout must be 'leads_first', 'samples_first' or 'auto', got {layout!r}")
    n = arr.shape[0]
    if leads is None:
        leads = STANDARD_LEADS if n == 12 else tuple(f"ch{i}" for i in range(n))
    unit_list = [units] * n if isinstance(units, str) else list(units)
    if len(unit_list) != n:
        raise DataError(f"{len(unit_list)} units given for {n} leads")
    scale = np.array([unit_scale_to_mv(u, channel=str(c)) for u, c in zip(unit_list, leads, strict=False)])
    meta = dict(metadata or {})
    meta.setdefault("units", list(unit_list))
    return ECG(arr * scale[:, None], fs=fs, leads=list(leads), record=record, metadata=meta)


def _is_ecg_npz(path: Path) -> bool:
    """Accept a .npz holding 'signal' and 'fs' arrays."""
    with np.load(path, allow_pickle=False) as z:
        return {"signal", "fs"} <= set(z.files)


def read_ecg_npz(path: str | os.PathLike, *, layout: str = "auto") -> ECG:
    """Read an ECG saved as ``.npz`` with ``signal``, ``fs`` and optionally ``leads`` and ``units``.

    Parameters
    ----------
    path
        The ``.npz`` file (``np.savez(path, signal=..., fs=..., leads=[...], units="mV")``).
    layout
        As in :func:`ecg_from_array`.

    Returns
    -------
    ECG
        The recording in millivolts.

    Raises
    ------
    ReaderError
        The file is not a readable ``.npz`` or lacks ``signal`` / ``fs``.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ReaderError(p, f"not a readable .npz archive ({exc})") from exc
    missing = [k for k in ("signal", "fs") if k not in data]
    if missing:
        raise ReaderError(
            p, f"an ECG .npz needs arrays 'signal' and 'fs'; missing {missing} (has {sorted(data)})"
        )
    leads = [str(x) for x in data["leads"].ravel()] if "leads" in data else None
    units: Any = data.get("units", np.array("mV"))
    units = str(units) if units.ndim == 0 else [str(u) for u in units.ravel()]
    try:
        ecg = ecg_from_array(
            data["signal"], float(data["fs"]), leads, units=units, layout=layout, record=p.stem
        )
    except DataError as exc:
        raise ReaderError(p, str(exc)) from exc
    ecg.path = str(p)
    return ecg

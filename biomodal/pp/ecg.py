"""ECG preprocessing on ``(leads, samples)`` arrays: filtering, baseline, resampling, lead order.

All filters are zero-phase (forward-backward, :func:`scipy.signal.sosfiltfilt` /
:func:`scipy.signal.filtfilt`), so waves are not shifted in time. NaN samples (WFDB's
"invalid" value) are linearly interpolated before filtering.
:class:`~biomodal.pp.ECGPipeline` (in :mod:`biomodal.pp.ecg_pipeline`) chains the steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from biomodal.errors import ConfigError, DataError
from biomodal.io._ecg import STANDARD_LEADS, normalize_lead_name

__all__ = [
    "bandpass",
    "crop_or_pad",
    "fill_nan",
    "notch",
    "remove_baseline",
    "resample",
    "to_standard_leads",
]


def _as_2d(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise DataError(f"expected a (leads, samples) array, got shape {arr.shape}")
    return arr


def fill_nan(x: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN samples along each lead (an all-NaN lead becomes zeros)."""
    arr = _as_2d(x).copy()
    for row in arr:
        bad = ~np.isfinite(row)
        if bad.all():
            row[:] = 0.0
        elif bad.any():
            idx = np.arange(row.size)
            row[bad] = np.interp(idx[bad], idx[~bad], row[~bad])
    return arr


def _zero_phase(sos: np.ndarray, arr: np.ndarray, what: str) -> np.ndarray:
    from scipy import signal

    try:
        return signal.sosfiltfilt(sos, fill_nan(arr), axis=-1)
    except ValueError as exc:  # too short for the filter's padding
        raise DataError(f"{what}: signal of {arr.shape[-1]} samples is too short to filter ({exc})") from exc


def bandpass(
    x: np.ndarray, fs: float, *, low: float | None = 0.5, high: float | None = 40.0, order: int = 4
) -> np.ndarray:
    """Zero-phase Butterworth band-pass (or high-/low-pass when one edge is ``None``).

    Parameters
    ----------
    x
        ``(leads, samples)`` array (a 1-D lead is treated as one row).
    fs
        Sampling rate in Hz.
    low, high
        Pass-band edges in Hz; ``high`` must be below ``fs / 2``.
    order
        Filter order (doubled by the forward-backward pass).

    Returns
    -------
    numpy.ndarray
        Filtered float64 array of the same shape as a 2-D input.

    Raises
    ------
    ConfigError
        Edges out of order or at/above the Nyquist frequency.
    """
    from scipy import signal

    nyq = fs / 2.0
    if high is not None and high >= nyq:
        raise ConfigError(f"band-pass high edge {high} Hz must be below the Nyquist frequency {nyq:g} Hz")
    if low is not None and (low <= 0 or (high is not None and low >= high)):
        raise ConfigError(f"band-pass edges must satisfy 0 < low < high, got low={low}, high={high}")
    if low is None and high is None:
        return _as_2d(x).copy()
    if low is None:
        sos = signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
    elif high is None:
        sos = signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    else:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return _zero_phase(sos, _as_2d(x), "bandpass")


def notch(x: np.ndarray, fs: float, *, freq: float = 50.0, quality: float = 30.0) -> np.ndarray:
    """Zero-phase IIR notch at the mains frequency ``freq`` (50 Hz Europe, 60 Hz Americas).

    Parameters
    ----------
    x
        ``(leads, samples)`` array.
    fs
        Sampling rate in Hz.
    freq
        Frequency to remove, below ``fs / 2``.
    quality
        Quality factor: notch width is ``freq / quality``.

    Returns
    -------
    numpy.ndarray
        Filtered float64 array.

    Raises
    ------
    ConfigError
        ``freq`` at or above the Nyquist frequency.
    """
    from scipy import signal

    if not 0 < freq < fs / 2.0:
        raise ConfigError(
            f"notch frequency {freq} Hz must lie between 0 and the Nyquist frequency {fs / 2:g} Hz"
        )
    b, a = signal.iirnotch(freq, quality, fs=fs)
    return _zero_phase(signal.tf2sos(b, a), _as_2d(x), "notch")


def remove_baseline(
    x: np.ndarray,
    fs: float,
    *,
    method: str = "median",
    windows_s: tuple[float, float] = (0.2, 0.6),
    cutoff: float = 0.5,
) -> np.ndarray:
    """Remove baseline wander.

    Parameters
    ----------
    x
        ``(leads, samples)`` array.
    fs
        Sampling rate in Hz.
    method
        ``"median"``: subtract a two-stage median filter (``windows_s`` seconds: the first removes
        QRS complexes and P waves, the second T waves; de Chazal et al. 2004). ``"highpass"``:
        zero-phase Butterworth high-pass at ``cutoff`` Hz.
    windows_s
        The two median windows in seconds (``"median"``).
    cutoff
        High-pass cut-off in Hz (``"highpass"``).

    Returns
    -------
    numpy.ndarray
        The signal minus its baseline, float64.
    """
    arr = fill_nan(x)
    if method == "highpass":
        return bandpass(arr, fs, low=cutoff, high=None)
    if method != "median":
        raise ConfigError(f"baseline method must be 'median' or 'highpass', got {method!r}")
    from scipy import ndimage

    # The baseline is slow: estimate it on every step-th sample (about 100 Hz) and interpolate
    # back, which costs step**2 less than filtering at the full rate.
    step = max(int(fs // 100), 1)
    base = arr[:, ::step]
    for w in windows_s:
        size = max(round(w * fs / step) | 1, 1)  # odd window
        base = ndimage.median_filter(base, size=(1, size), mode="nearest")
    if step > 1:
        idx = np.arange(arr.shape[1])
        base = np.vstack([np.interp(idx, idx[::step], row) for row in base])
    return arr - base


def resample(x: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """Resample to ``target_fs`` with a polyphase anti-aliasing filter (:func:`scipy.signal.resample_poly`).

    The ratio ``target_fs / fs`` is approximated by a fraction with denominator at most 1000
    (360 -> 500 Hz is 25/18 exactly).

    Returns
    -------
    numpy.ndarray
        ``(leads, round(samples * target_fs / fs))`` float64.
    """
    arr = fill_nan(x)
    if target_fs <= 0:
        raise ConfigError(f"target sampling rate must be positive, got {target_fs}")
    if np.isclose(fs, target_fs):
        return arr
    from scipy import signal

    ratio = Fraction(target_fs / fs).limit_denominator(1000)
    out = signal.resample_poly(arr, ratio.numerator, ratio.denominator, axis=-1)
    n = round(arr.shape[-1] * target_fs / fs)
    return out[:, :n] if out.shape[-1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[-1])))


def crop_or_pad(
    x: np.ndarray,
    n_samples: int,
    *,
    mode: str = "center",
    rng: np.random.Generator | None = None,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Cut or pad every lead to ``n_samples``.

    Parameters
    ----------
    x
        ``(leads, samples)`` array.
    n_samples
        Target length.
    mode
        Where to crop or pad: ``"start"`` (keep the beginning, pad at the end), ``"center"``,
        or ``"random"`` (random crop offset, training augmentation; padding at the end).
    rng
        Generator for ``mode="random"``.
    pad_value
        Fill value of the padding.

    Returns
    -------
    numpy.ndarray
        ``(leads, n_samples)`` array of the input dtype.
    """
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None]
    if mode not in ("start", "center", "random"):
        raise ConfigError(f"crop mode must be 'start', 'center' or 'random', got {mode!r}")
    n = arr.shape[-1]
    if n > n_samples:
        extra = n - n_samples
        off = {"start": 0, "center": extra // 2}.get(mode)
        if off is None:
            off = int((rng or np.random.default_rng()).integers(0, extra + 1))
        return arr[:, off : off + n_samples]
    if n < n_samples:
        before = (n_samples - n) // 2 if mode == "center" else 0
        return np.pad(arr, ((0, 0), (before, n_samples - n - before)), constant_values=pad_value)
    return arr


def to_standard_leads(
    x: np.ndarray,
    leads: Sequence[str],
    *,
    order: Sequence[str] = STANDARD_LEADS,
    derive_limb: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reorder leads to ``order`` (the standard 12), with zeros and a ``False`` mask where absent.

    Parameters
    ----------
    x
        ``(leads, samples)`` array.
    leads
        Names of the rows of ``x`` (normalised with :func:`~biomodal.io.normalize_lead_name`,
        so ``"MLII"`` fills ``II``). Leads not in ``order`` (Frank leads) are dropped.
    order
        Output lead order.
    derive_limb
        Compute absent limb leads from two present ones with Einthoven's and Goldberger's
        relations (``III = II - I``, ``aVR = -(I + II) / 2``, ``aVL = I - II / 2``,
        ``aVF = II - I / 2``, and ``II = I + III`` when only I and III exist); derived leads
        count as present in the mask.

    Returns
    -------
    signal : numpy.ndarray
        ``(len(order), samples)`` array of the input dtype.
    mask : numpy.ndarray
        ``(len(order),)`` bool, ``True`` where the lead was recorded (or derived).
    """
    arr = np.asarray(x)
    norm = [normalize_lead_name(n) for n in leads]
    if len(norm) != arr.shape[0]:
        raise DataError(f"{len(norm)} lead names for {arr.shape[0]} rows")
    have = {}
    for i, n in enumerate(norm):
        have.setdefault(n, arr[i])
    if derive_limb:
        if "I" in have and "II" not in have and "III" in have:
            have["II"] = have["I"] + have["III"]
        if "I" in have and "II" in have:
            i1, i2 = have["I"], have["II"]
            for name, val in (
                ("III", i2 - i1),
                ("aVR", -(i1 + i2) / 2),
                ("aVL", i1 - i2 / 2),
                ("aVF", i2 - i1 / 2),
            ):
                have.setdefault(name, val)
    out = np.zeros((len(order), arr.shape[1]), dtype=arr.dtype)
    mask = np.zeros(len(order), dtype=bool)
    for j, name in enumerate(order):
        if name in have:
            out[j], mask[j] = have[name], True
    return out, mask

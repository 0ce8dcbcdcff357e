"""DICOM waveform ECGs (12-lead, general, ambulatory) -> :class:`~biomodal.io.ECG` in millivolts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import DataError, ReaderError
from biomodal.io._ecg import ECG, unit_scale_to_mv

__all__ = ["is_dicom_waveform", "read_ecg_dicom"]

#: SOP classes of DICOM waveform storage start with this root (9.1.x ECG, 9.2.x haemodynamic, ...).
WAVEFORM_SOP_ROOT = b"1.2.840.10008.5.1.4.1.1.9."


def is_dicom_waveform(path: Path) -> bool:
    """Accept a DICOM file ('DICM' at byte 128) whose SOP class is a waveform storage class."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return head[128:132] == b"DICM" and WAVEFORM_SOP_ROOT in head


def _pick_group(seq: Any, group: int | str | None, path: Path) -> int:
    labels = [str(g.get("MultiplexGroupLabel", "")).strip() for g in seq]
    if group is None:
        return labels.index("RHYTHM") if "RHYTHM" in labels else 0
    if isinstance(group, str):
        if group not in labels:
            raise DataError(f"{path}: no waveform group labelled {group!r} (groups: {labels})")
        return labels.index(group)
    if not 0 <= int(group) < len(seq):
        raise DataError(f"{path}: waveform group {group} out of range ({len(seq)} groups: {labels})")
    return int(group)


def _num(x: Any) -> float | None:
    return None if x is None or x == "" else float(x)


def _channel_name(ch: Any, i: int) -> str:
    src = ch.get("ChannelSourceSequence")
    if src:
        meaning = src[0].get("CodeMeaning")
        if meaning:
            return str(meaning)
    label = ch.get("ChannelLabel")
    return str(label) if label else f"ch{i}"


def read_ecg_dicom(path: str | os.PathLike, *, group: int | str | None = None) -> ECG:
    """Read a DICOM waveform ECG with pydicom.

    Parameters
    ----------
    path
        The ``.dcm`` file.
    group
        Multiplex group to read, by index or label (``"RHYTHM"``, ``"MEDIAN BEAT"``); default the
        ``"RHYTHM"`` group if there is one, else the first.

    Returns
    -------
    ECG
        ``(leads, samples)`` float32 millivolts (channel sensitivity, correction factor and
        baseline applied, then the sensitivity units, usually µV, converted), ``fs`` from the
        group's sampling frequency, lead names from the channel source code meanings (``"Lead I
        (Einthoven)"`` -> ``"I"``); ``metadata`` holds the group labels, patient age and sex,
        acquisition time and the channels' filter settings.

    Raises
    ------
    ReaderError
        Not a DICOM file, no ``WaveformSequence`` (an image, a structured report...), a channel
        without sensitivity (amplitudes in unknown units), undecodable waveform data. The message
        names the file.
    DataError
        Unknown ``group``; a channel whose units are not a voltage.
    """
    pydicom = import_optional("pydicom", "clinical")
    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:  # pydicom raises InvalidDicomError, OSError, struct errors...
        raise ReaderError(p, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    seq = ds.get("WaveformSequence")
    if not seq:
        what = str(ds.get("SOPClassUID", "unknown SOP class"))
        name = getattr(ds.get("SOPClassUID"), "name", "") or what
        raise ReaderError(
            p,
            f"no waveform data: the DICOM has no WaveformSequence (5400,0100); it is a {name} "
            f"(modality {ds.get('Modality', '?')}), not an ECG waveform",
        )
    gi = _pick_group(seq, group, p)
    g = seq[gi]
    try:
        arr = np.asarray(ds.waveform_array(gi), dtype=np.float64).T  # (channels, samples)
    except Exception as exc:
        raise ReaderError(p, f"cannot decode waveform group {gi} ({type(exc).__name__}: {exc})") from exc
    chans = list(g.ChannelDefinitionSequence)
    names = [_channel_name(c, i) for i, c in enumerate(chans)]
    scale = []
    for name, ch in zip(names, chans, strict=True):
        if "ChannelSensitivity" not in ch:
            raise ReaderError(
                p, f"channel {name!r} of group {gi} has no ChannelSensitivity: amplitudes in unknown units"
            )
        units = ch.get("ChannelSensitivityUnitsSequence")
        unit = str(units[0].CodeValue) if units else "uV"
        scale.append(unit_scale_to_mv(unit, source=p, channel=name))
    sex = str(ds.get("PatientSex", "") or "").lower() or None
    age = str(ds.get("PatientAge", "") or "")
    meta: dict[str, Any] = {
        "groups": [str(x.get("MultiplexGroupLabel", "")) for x in seq],
        "group": str(g.get("MultiplexGroupLabel", gi)),
        "units": [
            str(c.ChannelSensitivityUnitsSequence[0].CodeValue)
            for c in chans
            if c.get("ChannelSensitivityUnitsSequence")
        ],
        "acquisition": str(ds.get("AcquisitionDateTime", "")) or None,
        "filters_hz": [
            (_num(c.get("FilterLowFrequency")), _num(c.get("FilterHighFrequency"))) for c in chans
        ],
    }
    if sex:
        meta["sex"] = sex
    if age[:-1].isdigit() and age.endswith("Y"):
        meta["age"] = float(age[:-1])
    return ECG(
        arr * np.asarray(scale)[:, None],
        fs=float(g.SamplingFrequency),
        leads=names,
        path=str(p),
        record=str(ds.get("SOPInstanceUID", p.stem)),
        metadata=meta,
    )

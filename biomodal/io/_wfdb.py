"""WFDB (PhysioNet) ECG records -> :class:`~biomodal.io.ECG` in millivolts.

Before decoding, the header is checked against the data: the record line's signal
count against the signal lines, and each ``.dat`` file's size against the header's
signal count, sample length and storage format (a truncated download or a header of
another record fails here, naming both files, instead of deep inside ``wfdb``). After
decoding, each signal's checksum is compared with the header's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import DataError, ReaderError, UnsupportedFormatError
from biomodal.io._ecg import ECG, normalize_lead_name, unit_scale_to_mv

__all__ = ["keep_present_records", "read_wfdb", "wfdb_record_path"]

#: Bytes per sample of the uncompressed WFDB storage formats.
_BYTES = {
    "8": 1,
    "16": 2,
    "24": 3,
    "32": 4,
    "61": 2,
    "80": 1,
    "160": 2,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}
_AGE = re.compile(r"\bage>?\s*:?\s*(\d+(?:\.\d+)?)", re.I)
_SEX = re.compile(r"\bsex>?\s*:\s*([a-z]+)", re.I)
_MITBIH = re.compile(r"^\s*(\d+)\s+([MF])\b", re.M)  # MIT-BIH comment line: "69 M 1085 1629 x1"


def wfdb_record_path(path: str | os.PathLike) -> Path:
    """Record path without suffix: ``"x/100.hea"``, ``"x/100.dat"`` and ``"x/100"`` all give ``x/100``."""
    p = Path(path).expanduser()
    return p.with_suffix("") if p.suffix.lower() in (".hea", ".dat") else p


def _parse_meta(comments: Sequence[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"comments": list(comments)}
    text = "\n".join(comments)
    if m := _AGE.search(text):
        meta["age"] = float(m.group(1))
    if m := _SEX.search(text):
        meta["sex"] = m.group(1).lower()
    if "age" not in meta and (m := _MITBIH.search(text)):
        meta["age"], meta["sex"] = float(m.group(1)), m.group(2).lower()
    return meta


def _check_header(header: Any, hea: Path) -> None:
    names = list(header.sig_name or [])
    if header.n_sig != len(names):
        raise ReaderError(
            hea,
            f"the record line declares {header.n_sig} signals but {len(names)} signal lines follow "
            f"(record {header.record_name!r})",
        )
    if header.n_sig == 0:
        raise ReaderError(hea, f"record {header.record_name!r} has no signals")


def _check_sizes(header: Any, base: Path, hea: Path) -> None:
    """Compare each data file's size with what the header describes."""
    files: dict[str, list[int]] = {}
    for i, fname in enumerate(header.file_name):
        files.setdefault(fname, []).append(i)
    spf = header.samps_per_frame or [1] * header.n_sig
    offsets = header.byte_offset or [None] * header.n_sig
    for fname, idx in files.items():
        fmts = [str(header.fmt[i]) for i in idx]
        if fname == "~" or any(f not in _BYTES for f in fmts):
            continue  # null file or compressed (FLAC) format: the size says nothing
        dat = base.parent / fname
        if not dat.is_file():
            raise ReaderError(
                dat, f"data file of record {header.record_name!r} is missing (named in {hea.name})"
            )
        frame = sum(_BYTES[str(header.fmt[i])] * (spf[i] or 1) for i in idx)
        offset = int(offsets[idx[0]] or 0)
        size = dat.stat().st_size
        frames_found = (size - offset) / frame
        desc = (
            f"{len(idx)} signal(s) {[header.sig_name[i] for i in idx]} "
            f"in format {'/'.join(sorted(set(fmts)))}"
            f" ({frame:g} bytes per frame)"
        )
        if header.sig_len is None:
            if abs(frames_found - round(frames_found)) * frame >= 1:
                raise ReaderError(
                    dat,
                    f"{size - offset} data bytes is not a whole number of frames of {desc}: the header's "
                    f"signal count disagrees with the data (record {header.record_name!r})",
                )
            continue
        expected = offset + math.ceil(header.sig_len * frame)
        if size < expected:
            raise ReaderError(
                dat,
                f"truncated: {size} bytes, but {hea.name} describes {header.sig_len} samples of {desc} = "
                f"{expected} bytes; only {max(int(frames_found), 0)} of {header.sig_len} samples are "
                "present, "
                f"or the header's signal count or length is wrong (record {header.record_name!r})",
            )
        if size - expected >= max(math.ceil(frame), 4):
            raise ReaderError(
                dat,
                f"{size} bytes, more than the {expected} that {hea.name} describes ({header.sig_len} samples "
                f"of {desc}; the data hold about {int(frames_found)}): the header's signal count or length "
                f"disagrees with the data (record {header.record_name!r})",
            )


def _channel_indices(channels: Sequence[int | str] | None, names: list[str], hea: Path) -> list[int] | None:
    if channels is None:
        return None
    norm = [normalize_lead_name(n) for n in names]
    out = []
    for c in channels:
        if isinstance(c, (int, np.integer)):
            if not 0 <= int(c) < len(names):
                raise DataError(f"{hea}: channel index {c} out of range (record has {len(names)} signals)")
            out.append(int(c))
        elif c in names:
            out.append(names.index(c))
        elif normalize_lead_name(c) in norm:
            out.append(norm.index(normalize_lead_name(c)))
        else:
            raise DataError(f"{hea}: no lead {c!r} in this record (leads: {names})")
    return out


def read_wfdb(
    path: str | os.PathLike,
    *,
    channels: Sequence[int | str] | None = None,
    sampfrom: int = 0,
    sampto: int | None = None,
    verify: bool = True,
    non_voltage: str = "error",
) -> ECG:
    """Read a single-segment WFDB record (``.hea`` + ``.dat``) as an :class:`~biomodal.io.ECG`.

    Parameters
    ----------
    path
        The record as ``"dir/100"``, ``"dir/100.hea"`` or ``"dir/100.dat"``.
    channels
        Leads to read, by index or name (raw or normalised); default all.
    sampfrom, sampto
        Sample range to read (default the whole record).
    verify
        Check each signal's checksum against the header (whole-record reads only).
    non_voltage
        What to do with channels whose units are not a voltage (blood pressure, respiration):
        ``"error"`` (default) or ``"drop"``.

    Returns
    -------
    ECG
        ``signal`` ``(leads, samples)`` float32 millivolts (µV and V converted; invalid samples
        NaN), ``fs``, normalised ``leads`` (``MLII`` -> ``II``, ``avr`` -> ``aVR``), ``raw_leads``,
        ``record`` and ``metadata`` (header comments; ``age`` and ``sex`` where the comments say;
        original ``units``; ``fmt``; ``base_date``).

    Raises
    ------
    ReaderError
        Header missing or unparsable; its signal count disagrees with its signal lines; a data
        file is missing, truncated or longer than the header says; a checksum mismatch. The
        message names the file and the record.
    UnsupportedFormatError
        A multi-segment record.
    DataError
        A channel that is not a voltage (with ``non_voltage="error"``), an unknown channel.
    """
    if non_voltage not in ("error", "drop"):
        raise DataError(f"non_voltage must be 'error' or 'drop', got {non_voltage!r}")
    wfdb = import_optional("wfdb", "clinical")
    base = wfdb_record_path(path)
    hea = base.parent / f"{base.name}.hea"
    if not hea.is_file():
        raise ReaderError(hea, "WFDB header not found (a record is <name>.hea plus its .dat file)")
    try:
        header = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises bare ValueError/IndexError/TypeError on bad headers
        raise ReaderError(hea, f"cannot parse the WFDB header ({type(exc).__name__}: {exc})") from exc
    if getattr(header, "seg_name", None) is not None:
        raise UnsupportedFormatError(hea, f"record {header.record_name!r} is multi-segment; not supported")
    _check_header(header, hea)
    _check_sizes(header, base, hea)
    idx = _channel_indices(channels, list(header.sig_name), hea)
    try:
        rec = wfdb.rdrecord(str(base), physical=False, channels=idx, sampfrom=sampfrom, sampto=sampto)
    except Exception as exc:
        raise ReaderError(
            hea, f"cannot read record {header.record_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    if verify and sampfrom == 0 and sampto is None and rec.checksum is not None:
        found = rec.calc_checksum()
        for name, want, got in zip(rec.sig_name, rec.checksum, found, strict=True):
            if want is not None and (int(want) - int(got)) % 65536 != 0:
                raise ReaderError(
                    base.parent / rec.file_name[rec.sig_name.index(name)],
                    f"checksum of signal {name!r} is {int(got) % 65536}, the header {hea.name} says "
                    f"{int(want) % 65536}: the header does not describe this data "
                    f"(record {rec.record_name!r})",
                )
    phys = rec.dac(expanded=False, return_res=64).T  # (leads, samples), NaN for invalid samples
    names, units = list(rec.sig_name), list(rec.units or ["mV"] * len(rec.sig_name))
    keep, scale = [], []
    for i, (name, unit) in enumerate(zip(names, units, strict=True)):
        try:
            scale.append(unit_scale_to_mv(unit, source=hea, channel=name))
            keep.append(i)
        except DataError:
            if non_voltage == "error":
                raise
    meta = _parse_meta(rec.comments or [])
    meta.update(units=[units[i] for i in keep], fmt=[str(rec.fmt[i]) for i in keep], base_date=rec.base_date)
    return ECG(
        phys[keep] * np.asarray(scale)[:, None],
        fs=float(rec.fs),
        leads=[names[i] for i in keep],
        path=str(hea),
        record=str(rec.record_name),
        metadata=meta,
    )


def keep_present_records(df: Any, missing: str, describe: Any) -> Any:
    """Rows of an index table whose WFDB record (``df["path"]`` + ``.hea`` and ``.dat``) exists.

    Parameters
    ----------
    df
        Index table with a ``path`` column of record paths without suffix.
    missing
        ``"keep"`` (no check), ``"drop"`` (leave absent records out) or ``"error"``.
    describe
        ``describe(n_absent, first_index) -> str``: the message of the :class:`DataError` raised
        with ``missing="error"`` (it names the index file and the first absent record).
    """
    if missing == "keep":
        return df
    ok = np.array([Path(f"{p}.hea").is_file() and Path(f"{p}.dat").is_file() for p in df["path"]])
    if ok.all():
        return df
    if missing == "error":
        raise DataError(describe(int((~ok).sum()), df.index[~ok][0]))
    return df[ok]

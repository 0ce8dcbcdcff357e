"""Writers of small WFDB records and PTB-XL / MIMIC-IV-ECG trees in the real layouts (for tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
MIMIC_LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def synthetic_ecg(n_leads: int, n: int, fs: float, seed: int = 0) -> np.ndarray:
    """``(samples, leads)`` mV: 1.2 Hz pulses plus a little noise, different per lead."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    beat = np.exp(-(((t * 1.2) % 1.0 - 0.3) ** 2) / 0.0008)
    amp = rng.uniform(0.3, 1.5, n_leads)
    return beat[:, None] * amp[None] + 0.02 * rng.standard_normal((n, n_leads))


def write_record(
    folder: Path,
    name: str,
    signal: np.ndarray,
    fs: float,
    leads: list[str],
    *,
    units: str | list[str] = "mV",
    gain: float = 1000.0,
    comments: list[str] | None = None,
) -> Path:
    """Write a format-16 WFDB record; return its path without suffix."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    n_sig = signal.shape[1]
    unit_list = [units] * n_sig if isinstance(units, str) else list(units)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=unit_list,
        sig_name=list(leads),
        p_signal=signal,
        fmt=["16"] * n_sig,
        adc_gain=[gain] * n_sig,
        baseline=[0] * n_sig,
        comments=comments or [],
        write_dir=str(folder),
    )
    return folder / name


SCP = pd.DataFrame(
    {
        "description": [
            "normal ECG",
            "anterior myocardial infarction",
            "sinus rhythm",
            "left ventricular hypertrophy",
        ],
        "diagnostic": [1.0, 1.0, np.nan, 1.0],
        "form": [np.nan, np.nan, np.nan, np.nan],
        "rhythm": [np.nan, np.nan, 1.0, np.nan],
        "diagnostic_class": ["NORM", "MI", np.nan, "HYP"],
        "diagnostic_subclass": ["NORM", "AMI", np.nan, "LVH"],
    },
    index=pd.Index(["NORM", "AMI", "SR", "LVH"]),
)


def make_ptbxl_tree(root: Path, n: int = 6, *, ages: list[float] | None = None) -> Path:
    """A PTB-XL folder in the real layout: database and statements tables, records100/ and records500/."""
    codes = [
        {"NORM": 100.0, "SR": 0.0},
        {"AMI": 80.0, "SR": 0.0},
        {"LVH": 50.0, "AMI": 100.0},
        {"SR": 0.0},
        {"NORM": 100.0},
        {"LVH": 100.0},
    ]
    rows = []
    for i in range(1, n + 1):
        sub = f"{(i // 1000) * 1000:05d}"
        lr, hr = f"records100/{sub}/{i:05d}_lr", f"records500/{sub}/{i:05d}_hr"
        sig = synthetic_ecg(12, 5000, 500.0, seed=i)
        write_record(root / f"records500/{sub}", f"{i:05d}_hr", sig, 500, LEADS)
        write_record(root / f"records100/{sub}", f"{i:05d}_lr", sig[::5], 100, LEADS)
        rows.append(
            {
                "ecg_id": i,
                "patient_id": float(100 + i // 2),  # records 2k and 2k+1 share a patient
                "age": (ages or [56.0, 300.0, np.nan, 40.0, 71.0, 23.0])[(i - 1) % 6],
                "sex": i % 2,
                "height": [np.nan, 170.0, np.nan, 180.0, np.nan, 160.0][(i - 1) % 6],
                "weight": [63.0, np.nan, 80.0, 90.0, 55.0, np.nan][(i - 1) % 6],
                "report": [
                    "sinusrhythmus normales ekg",
                    "qt-verlÄngerung",
                    "sinus rhythm. lvh.",
                    "",
                    "XXXX",
                    "lvh",
                ][(i - 1) % 6],
                "scp_codes": str(codes[(i - 1) % 6]),
                "strat_fold": 1 + (i // 2) % 3,
                "filename_lr": lr,
                "filename_hr": hr,
            }
        )
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    SCP.to_csv(root / "scp_statements.csv")
    return root


def make_mimic_tree(root: Path, n: int = 4) -> Path:
    """A MIMIC-IV-ECG folder in the real layout (record list, machine measurements, note links, files/)."""
    recs, meas, links = [], [], []
    for k in range(n):
        subject, study = 10000032 + (k // 2), 40689238 + k
        rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        write_record(
            root / Path(rel).parent, str(study), synthetic_ecg(12, 5000, 500.0, seed=k), 500, MIMIC_LEADS
        )
        time = f"2180-07-2{k} 08:0{k}:00"
        recs.append(
            {"subject_id": subject, "study_id": study, "file_name": study, "ecg_time": time, "path": rel}
        )
        row = {"subject_id": subject, "study_id": study, "cart_id": 6848296 + k, "ecg_time": time}
        statements = ["Sinus rhythm", "Possible anterior infarct - age undetermined", "Abnormal ECG"][
            : 1 + k % 3
        ]
        for j in range(18):
            row[f"report_{j}"] = statements[j] if j < len(statements) else np.nan
        row.update(
            bandwidth="0.005-150 Hz", filtering="60 Hz notch Baseline filter", rr_interval=659 + k,
            p_onset=40 if k != 1 else 29999, p_end=128, qrs_onset=170, qrs_end=258, t_end=518,
            p_axis=81, qrs_axis=77, t_axis=79,
        )  # fmt: skip
        meas.append(row)
        if k % 2 == 0:
            links.append({"subject_id": subject, "study_id": study, "waveform_path": rel, "note_id": f"n{k}"})
    pd.DataFrame(recs).to_csv(root / "record_list.csv", index=False)
    pd.DataFrame(meas).to_csv(root / "machine_measurements.csv", index=False)
    pd.DataFrame(links).to_csv(root / "waveform_note_links.csv", index=False)
    return root

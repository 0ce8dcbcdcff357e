"""Metric sinks of the trainer: CSV files (always) and TensorBoard (optional), rank 0 only."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from biomodal._atomic import atomic_path

__all__ = ["CSVLogger", "TensorBoardLogger", "read_csv_metrics"]

_FIRST = ("step", "epoch", "loss")
_LAST = ("time",)


def _order(keys: list[str]) -> list[str]:
    head = [k for k in _FIRST if k in keys]
    tail = [k for k in _LAST if k in keys]
    mid = [k for k in keys if k not in head and k not in tail]
    return head + mid + tail


def read_csv_metrics(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a metrics CSV back as a list of ``{column: float}`` (empty cells are skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


class CSVLogger:
    """Append rows of metrics to a CSV file; new columns rewrite the header in place.

    Parameters
    ----------
    path
        File to write (created with its folder).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                self.columns = next(csv.reader(fh), [])

    def log(self, row: Mapping[str, Any]) -> None:
        """Append one row (numbers are written with full precision)."""
        row = {k: _num(v) for k, v in row.items()}
        new = [k for k in row if k not in self.columns]
        if new:
            self._rewrite(_order(self.columns + new))
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows with ``step > step`` (rows a killed run logged after its last checkpoint)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("step") and float(r["step"]) <= step]
        self._write(self.columns, rows)

    def _rewrite(self, columns: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = list(csv.DictReader(fh))
        self._write(columns, rows)

    def _write(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
        self.columns = list(columns)

    def __repr__(self) -> str:
        return f"CSVLogger({str(self.path)!r}, columns={self.columns})"


def _num(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    return v


class TensorBoardLogger:
    """Scalars to TensorBoard event files under ``log_dir`` (``purge_step`` drops stale events)."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        """Write every numeric entry except ``step``/``epoch`` as a scalar."""
        for k, v in row.items():
            if k in ("step",):
                continue
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k if "/" in k else f"train/{k}", v, step)

    def close(self) -> None:
        """Flush and close."""
        self.writer.flush()
        self.writer.close()

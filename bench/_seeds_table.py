"""Shared helpers of the seed scripts in bench/: read a dotted metric, format mean +/- sd."""

from __future__ import annotations

import statistics
from typing import Any


def metric(metrics: dict[str, Any], dotted: str) -> float | None:
    """The number at ``dotted`` (``"expression.pearson_mean"``) in a metrics dict, else ``None``."""
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def mean_sd(values: list[float], *, show_n: bool = False) -> str:
    """``"m +/- sd"`` of several runs, the value alone for one, ``""`` for none.

    ``show_n``: add ``" (n=k)"``, and ``" (1 run)"`` to a single value.
    """
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}" + (" (1 run)" if show_n else "")
    cell = f"{statistics.mean(values):.3f} +/- {statistics.stdev(values):.3f}"
    return cell + (f" (n={len(values)})" if show_n else "")

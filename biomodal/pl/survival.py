"""Survival plots: Kaplan-Meier curves of held-out risk groups, with c-index and log-rank p.

:func:`kaplan_meier` draws a :class:`biomodal.eval.survival.SurvivalResult` (or the
``uns[key_added]`` dict written by :func:`biomodal.eval.survival_analysis`). Importing this
module registers the plots of the ``survival`` protocol (one PNG per basis and baseline).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.pl.plots import _finish, _plt
from biomodal.pl.protocols import register_plot

__all__ = ["kaplan_meier"]


def _curves_and_metrics(result: Any) -> tuple[dict[str, tuple[Any, Any]], Mapping[str, Any]]:
    if isinstance(result, Mapping):  # uns[key_added] of survival_analysis
        curves = {
            g: (np.asarray(c["time"]), np.asarray(c["survival"])) for g, c in result.get("curves", {}).items()
        }
        return curves, result
    return dict(result.curves), result.metrics


def kaplan_meier(result: Any, path: str | os.PathLike | None = None, *, title: str | None = None) -> Any:
    """Kaplan-Meier curves of the held-out groups, c-index (with interval) and log-rank p in the title.

    Parameters
    ----------
    result
        A :class:`~biomodal.eval.survival.SurvivalResult` or the ``uns`` dict of
        :func:`~biomodal.eval.survival_analysis`.
    path
        Where to save the PNG (the figure is returned when ``None``).
    title
        First title line (e.g. the basis).
    """
    plt = _plt()
    curves, m = _curves_and_metrics(result)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    groups = m.get("groups", {})
    for name, (t, s) in curves.items():
        g = groups.get(name, {})
        ax.step(t, s, where="post", label=f"{name} (n={g.get('n', '?')}, events={g.get('events', '?')})")
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ci = f"[{m.get('c_index_ci_low', np.nan):.3f}, {m.get('c_index_ci_high', np.nan):.3f}]"
    sub = f"held-out c-index {m.get('c_index', np.nan):.3f} {ci}, log-rank p={m.get('logrank_p', np.nan):.3g}"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


@register_plot("survival")
def _survival_plots(ctx: Any, cfg: Any, result: Any, out: Path) -> None:
    for name, res in result.artifacts.get("results", {}).items():
        kaplan_meier(res, out / f"survival_km_{name}.png", title=name)

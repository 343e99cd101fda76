"""Figures: one style, one `savefig` with deterministic files, published values beside ours.

Files are byte-identical for identical data: PNG metadata carries no software version or
date, and the Agg renderer is pinned, so figures can live in git and in DVC outputs.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; set before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = {
  "figure.dpi": 100,
  "savefig.dpi": 120,
  "font.size": 9,
  "axes.titlesize": 9,
  "axes.labelsize": 9,
  "legend.fontsize": 7,
  "axes.spines.top": False,
  "axes.spines.right": False,
  "axes.grid": True,
  "grid.alpha": 0.3,
  "lines.linewidth": 1.4,
  "svg.hashsalt": "innerloop",
}

# One colour per role, used across papers: ours vs the references they are compared with.
COLORS = {
  "trained": "#1f77b4",
  "gd": "#d62728",
  "gd++": "#2ca02c",
  "interpolated": "#9467bd",
  "published": "#222222",
  "other": "#ff7f0e",
}


def apply_style() -> None:
  plt.rcParams.update(STYLE)


def subplots(nrows: int = 1, ncols: int = 1, width: float = 3.2, height: float = 2.6, **kw):
  """`plt.subplots` in the project style, sized per panel."""
  apply_style()
  return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def plot_seeds(
  ax, x: Sequence[float], ys: np.ndarray, label: str, color: str, linestyle: str = "-"
) -> None:
  """Mean over seeds (rows of `ys`) with a min-max band."""
  ys = np.atleast_2d(np.asarray(ys, dtype=float))
  ax.plot(x, ys.mean(0), color=color, linestyle=linestyle, label=label)
  if ys.shape[0] > 1:
    ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.2, linewidth=0)


def plot_published(
  ax, x: Sequence[float] | None, y: Sequence[float] | float, label: str = "published"
) -> None:
  """Draws a published value: a dotted horizontal line for a scalar, markers for a series."""
  if x is None or np.ndim(y) == 0:
    ax.axhline(float(y), color=COLORS["published"], linestyle=":", linewidth=1.2, label=label)
  else:
    ax.plot(x, y, linestyle="none", marker="x", color=COLORS["published"], label=label)


def savefig(fig, path: str | pathlib.Path, note: str | None = None) -> pathlib.Path:
  """Saves `fig` as PNG without timestamps or version strings, then closes it.

  `note` is written small in the lower left corner (e.g. the profile and any deviation
  from the paper's setup), so a figure never travels without its caveats.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if note:
    fig.text(0.005, 0.005, note, fontsize=6, color="#555555", ha="left", va="bottom")
  fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
  fig.savefig(path, format="png", metadata={"Software": None})
  plt.close(fig)
  return path

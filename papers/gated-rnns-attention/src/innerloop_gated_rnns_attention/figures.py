"""Figures of the gated-rnns-attention reproduction, from results/<profile>/*.json only.

The paper's values are unknown to us (sheet §5), so no published series is drawn; every
figure notes the profile and the deviations that apply to it.
"""

from __future__ import annotations

import numpy as np

from innerloop_core import figures as fig
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_gated_rnns_attention.analysis import LAM_HIGH, LAM_LOW
from innerloop_gated_rnns_attention.config import Config

NOTE = "profile {profile}; paper values unknown (no public code); sizes and steps are our choice"


def _logit(p: np.ndarray) -> np.ndarray:
  p = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def teacher_student(res: dict, paths: PaperPaths) -> None:
  f, axes = fig.subplots(1, 3, width=3.3)
  ax = axes[0, 0]
  sizes = res["sizes"]
  losses = np.asarray([res["runs"][f"n{n}"]["val_nmse"] for n in sizes])  # [n, S]
  for s in range(losses.shape[1]):
    ax.scatter(sizes, losses[:, s], color=fig.COLORS["trained"], s=10, alpha=0.6)
  ax.plot(sizes, np.exp(np.log(losses).mean(1)), color=fig.COLORS["trained"], label="student")
  ax.axvline(res["n_compressed"], color=fig.COLORS["gd"], ls="--", lw=1, label="n compressed")
  ax.axvline(res["n_generic"], color=fig.COLORS["other"], ls="--", lw=1, label="n generic")
  ax.axhline(1e-3, color="#888888", ls=":", lw=1, label="C2 threshold")
  ax.set(
    xlabel="recurrent neurons n", ylabel="normalised MSE", yscale="log", title="E1: student loss"
  )
  ax.legend()
  ax = axes[0, 1]
  for n in sizes:
    curve = res["runs"][f"n{n}"]["curve"]
    fig.plot_seeds(ax, curve["step"], np.asarray(curve["value"]), f"n={n}", None)
  ax.set(xlabel="step", ylabel="normalised MSE", yscale="log", title="training")
  ax.legend()
  ax = axes[0, 2]
  analysed = res["analysis"]
  seeds = res["runs"][f"n{res['analysis_size']}"]["seeds"]
  for i, s in enumerate(seeds):
    ax.scatter(_logit(s["lam"]), s["influence"], s=12, alpha=0.7, label=f"seed {i}")
  for p in (LAM_LOW, LAM_HIGH):
    ax.axvline(_logit(p), color="#888888", ls=":", lw=1)
  frac = ", ".join(f"{v:.2f}" for v in analysed["bimodal_fraction"])
  ax.set(
    xlabel="logit λ",
    ylabel="output influence ‖∂y/∂h_i‖",
    title=f"E2: n={res['analysis_size']}, extreme-λ share {frac}",
  )
  ax.legend()
  fig.savefig(f, paths.figures / "fig2_teacher_student.png", NOTE.format(profile=paths.profile))


def icl(res: dict, paths: PaperPaths) -> None:
  f, axes = fig.subplots(1, 3, width=3.3)
  models = res["models"]
  ax = axes[0, 0]
  names = list(models)
  means = [np.mean(models[k]["val_loss"]) for k in names]
  ax.bar(range(len(names)), means, color=fig.COLORS["trained"])
  for i, k in enumerate(names):
    ax.scatter([i] * len(models[k]["val_loss"]), models[k]["val_loss"], color="k", s=6, zorder=3)
  ax.axhline(
    res["gd"]["loss"], color=fig.COLORS["gd"], ls="--", label=f"GD-1 (η={res['gd']['eta']:.2f})"
  )
  ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
  ax.set(ylabel="query loss ½(ŷ−y)²", title="E3/E6/E7: in-context regression")
  ax.legend()
  ax = axes[0, 1]
  sizes = res["rnn_sizes"]
  losses = np.asarray([models[f"rnn_n{n}"]["val_loss"] for n in sizes])
  for s in range(losses.shape[1]):
    ax.scatter(sizes, losses[:, s], color=fig.COLORS["trained"], s=10, alpha=0.6)
  ax.plot(sizes, losses.mean(1), color=fig.COLORS["trained"], label="gated RNN")
  ax.axhline(np.mean(models["lsa"]["val_loss"]), color=fig.COLORS["other"], label="trained LSA")
  ax.axhline(res["gd"]["loss"], color=fig.COLORS["gd"], ls="--", label="GD-1")
  ax.axvline(res["n_star"], color="#888888", ls=":", label="n* = Dx·Dy + Dx")
  ax.set(xlabel="recurrent neurons n", ylabel="query loss", yscale="log", title="E4: compression")
  ax.legend()
  ax = axes[0, 2]
  probed = [k for k in names if "probe_memory_r2_all" in models[k]]
  r2 = [np.mean(models[k]["probe_memory_r2_all"]) for k in probed]
  ax.bar(range(len(probed)), r2, color=fig.COLORS["trained"])
  ax.set_xticks(range(len(probed)), probed, rotation=60, ha="right")
  ax.set(
    ylabel="mean R² onto Σ_t y_t x_t", ylim=(min(0.0, min(r2)), 1.02), title="E5/E7: linear probes"
  )
  fig.savefig(f, paths.figures / "fig3_icl.png", NOTE.format(profile=paths.profile))


def render_all(cfg: Config, paths: PaperPaths) -> None:
  if cfg.teacher_student.enabled:
    teacher_student(runlog.read_json(paths.results / "teacher_student.json"), paths)
  if cfg.icl.enabled:
    icl(runlog.read_json(paths.results / "icl.json"), paths)

"""Figures of the icl-gd reproduction, rendered from results/<profile>/*.json only.

`python -m innerloop_icl_gd figures --profile cpu` regenerates them without training.
Published values are drawn where the paper states them (sheet §5), as dotted lines or x's.
"""

from __future__ import annotations

import numpy as np

from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_icl_gd.config import LSA_EXPERIMENTS, Config

# γ of the trained recurrent 2-layer model per N (paper A.10), drawn beside ours in Fig 13.
PUBLISHED_GAMMA = {10: 0.179, 25: 0.099, 50: 0.056, 100: 0.029}
PUBLISHED_EIG = {10: (1e-10, 4.6), 25: (0.097, 7.712), 50: (0.666, 10.845),
                 100: (2.870, 17.196)}


def _note(paths: PaperPaths, seeds: int, extra: str = "") -> str:
  return f"innerloop icl-gd · profile {paths.profile} · {seeds} seed(s){extra}"


def _loss_and_alignment(name: str, res: dict, paths: PaperPaths, title: str) -> None:
  refs, curves = res["references"], res["curves"]
  k = refs["gd"]["steps"]
  fig, ax = F.subplots(1, 3)
  loss = curves["val_loss"]
  F.plot_seeds(ax[0, 0], loss["step"], loss["value"], "trained TF", F.COLORS["trained"])
  ax[0, 0].axhline(refs["gd"]["loss"], color=F.COLORS["gd"], ls="--", label=f"GD-{k}")
  ax[0, 0].axhline(refs["gdpp"]["loss"], color=F.COLORS["gd++"], ls="--", label=f"GD++-{k}")
  if "interpolated" in res:
    ax[0, 0].axhline(np.mean(res["interpolated"]["val_loss"]), color=F.COLORS["interpolated"],
                     ls=":", label="interpolated")
  hi = max(refs["gd"]["loss"] * 2.2, 0.45)
  ax[0, 0].set(xlabel="training step", ylabel="loss (½ MSE, query)", title=title,
               ylim=(0, hi))
  ax[0, 0].legend()
  for ref, color in (("gd", F.COLORS["gd"]), ("gdpp", F.COLORS["gd++"])):
    c = curves[f"sens_cos_{ref}"]
    F.plot_seeds(ax[0, 1], c["step"], c["value"], f"vs {'GD' if ref == 'gd' else 'GD++'}-{k}",
                 color)
    d = curves[f"pred_diff_{ref}"]
    F.plot_seeds(ax[0, 2], d["step"], d["value"], f"|Δŷ| vs {ref.upper()}", color)
    s = curves[f"sens_diff_{ref}"]
    F.plot_seeds(ax[0, 2], s["step"], s["value"], f"‖Δ∂ŷ/∂x‖ vs {ref.upper()}", color, "--")
  ax[0, 1].set(xlabel="training step", ylabel="cosine of ∂ŷ/∂x_q", ylim=(0.0, 1.02),
               title="sensitivity alignment")
  ax[0, 1].legend()
  ax[0, 2].set(xlabel="training step", ylabel="mean difference", title="prediction / "
               "sensitivity difference", ylim=(0, 2.5))
  ax[0, 2].legend()
  F.savefig(fig, paths.figures / f"{name}.png", _note(paths, len(res["seeds"])))


def _ood(res: dict, paths: PaperPaths) -> None:
  ood = res["ood"]
  fig, ax = F.subplots(1, 2)
  for panel, (scales, tr, ref, xl) in enumerate((
      (ood["input_scales"], ood["trained_input"], ood["gd_input"], "input scale α"),
      (ood["target_scales"], ood["trained_target"], ood["gd_target"], "target scale α"))):
    a = ax[0, panel]
    F.plot_seeds(a, scales, tr, "trained TF", F.COLORS["trained"])
    a.plot(scales, ref, color=F.COLORS["gd"], ls="--", marker=".", label="GD-1")
    a.set(xlabel=xl, ylabel="loss", yscale="log", title="out of distribution")
    a.legend()
  F.savefig(fig, paths.figures / "fig2_ood.png", _note(paths, len(res["seeds"])))


def _dampening(res: dict, paths: PaperPaths) -> None:
  d = res["dampening"]
  fig, ax = F.subplots(1, len(d["lambdas"]))
  for i, lam in enumerate(d["lambdas"]):
    a = ax[0, i]
    trained = np.asarray([seed[i] for seed in d["trained"]])
    steps = np.arange(trained.shape[1])
    F.plot_seeds(a, steps, trained, "trained TF (repeated)", F.COLORS["trained"])
    a.plot(steps, d["gd"][i], color=F.COLORS["gd"], ls="--", label="GD steps")
    a.set(xlabel="applications / GD steps", ylabel="loss", yscale="log",
          title=f"dampening λ = {lam}")
    a.legend()
  F.savefig(fig, paths.figures / "fig10_dampening.png", _note(paths, len(res["seeds"])))


def _gamma_vs_n(res: dict, paths: PaperPaths) -> None:
  rows = res["rows"]
  ns = [r["num_context"] for r in rows]
  fig, ax = F.subplots(1, 2)
  ax[0, 0].plot(ns, [max(r["eig_min"], 1e-12) for r in rows], "o-", label="min eig (ours)")
  ax[0, 0].plot(ns, [r["eig_max"] for r in rows], "s-", label="max eig (ours)")
  pub = [n for n in ns if n in PUBLISHED_EIG]
  F.plot_published(ax[0, 0], pub, [PUBLISHED_EIG[n][1] for n in pub], "published max")
  ax[0, 0].set(xlabel="N", ylabel="eigenvalue of XXᵀ", yscale="log", title="XXᵀ spectrum")
  ax[0, 0].legend()
  gam = np.asarray([r["gamma"] for r in rows]).T
  F.plot_seeds(ax[0, 1], ns, gam, "trained TF γ", F.COLORS["trained"])
  ax[0, 1].plot(ns, [r["gdpp_gamma"] for r in rows], "--", color=F.COLORS["gd++"],
                label="fitted GD++ γ")
  F.plot_published(ax[0, 1], pub, [PUBLISHED_GAMMA[n] for n in pub], "published TF γ")
  ax[0, 1].set(xlabel="N", ylabel="γ", title="curvature correction γ vs N")
  ax[0, 1].legend()
  F.savefig(fig, paths.figures / "fig13_gamma_vs_n.png",
            _note(paths, gam.shape[0]))


def render_all(cfg: Config, paths: PaperPaths) -> None:
  """Renders every figure whose results exist for this profile."""
  titles = {"fig2": "1-layer LSA vs GD-1", "fig3a": "recurrent 2-layer LSA",
            "fig3b": "5-layer LSA", "fig7": "recurrent 10-layer LSA",
            "fig12_softmax1": "1-head softmax SA", "fig12_softmax2": "2-head softmax SA"}
  for name in LSA_EXPERIMENTS:
    path = paths.results / f"{name}.json"
    if getattr(cfg, name).enabled:
      res = runlog.read_json(path)
      _loss_and_alignment(name, res, paths, titles[name])
      if "ood" in res:
        _ood(res, paths)
        _dampening(res, paths)
  if cfg.gamma_vs_n.enabled:
    _gamma_vs_n(runlog.read_json(paths.results / "fig13.json"), paths)

"""Figures of the icl-gd reproduction, rendered from results/<profile>/*.json only.

`python -m innerloop_icl_gd figures --profile cpu` regenerates them without training.
Published values are drawn where the paper states them (sheet §5), as dotted lines or x's.
"""

from __future__ import annotations

import numpy as np

from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_icl_gd import nonlinear
from innerloop_icl_gd.config import LSA_EXPERIMENTS, Config

# γ of the trained recurrent 2-layer model per N (paper A.10), drawn beside ours in Fig 13.
PUBLISHED_GAMMA = {10: 0.179, 25: 0.099, 50: 0.056, 100: 0.029}
PUBLISHED_EIG = {10: (1e-10, 4.6), 25: (0.097, 7.712), 50: (0.666, 10.845), 100: (2.870, 17.196)}


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
    ax[0, 0].axhline(
      np.mean(res["interpolated"]["val_loss"]),
      color=F.COLORS["interpolated"],
      ls=":",
      label="interpolated",
    )
  hi = max(refs["gd"]["loss"] * 2.2, 0.45)
  ax[0, 0].set(xlabel="training step", ylabel="loss (½ MSE, query)", title=title, ylim=(0, hi))
  ax[0, 0].legend()
  for ref, color in (("gd", F.COLORS["gd"]), ("gdpp", F.COLORS["gd++"])):
    c = curves[f"sens_cos_{ref}"]
    F.plot_seeds(
      ax[0, 1], c["step"], c["value"], f"vs {'GD' if ref == 'gd' else 'GD++'}-{k}", color
    )
    d = curves[f"pred_diff_{ref}"]
    F.plot_seeds(ax[0, 2], d["step"], d["value"], f"|Δŷ| vs {ref.upper()}", color)
    s = curves[f"sens_diff_{ref}"]
    F.plot_seeds(ax[0, 2], s["step"], s["value"], f"‖Δ∂ŷ/∂x‖ vs {ref.upper()}", color, "--")
  ax[0, 1].set(
    xlabel="training step",
    ylabel="cosine of ∂ŷ/∂x_q",
    ylim=(0.0, 1.02),
    title="sensitivity alignment",
  )
  ax[0, 1].legend()
  ax[0, 2].set(
    xlabel="training step",
    ylabel="mean difference",
    title="prediction / sensitivity difference",
    ylim=(0, 2.5),
  )
  ax[0, 2].legend()
  F.savefig(fig, paths.figures / f"{name}.png", _note(paths, len(res["seeds"])))


def _ood(name: str, res: dict, paths: PaperPaths) -> None:
  """Fig 6: loss when inputs or targets are scaled by α, trained model vs GD-K and GD++-K."""
  ood = res["ood"]
  k = res["references"]["gd"]["steps"]
  fig, ax = F.subplots(1, 2)
  for panel, axis, xl in ((0, "input", "input scale α"), (1, "target", "target scale α")):
    a = ax[0, panel]
    scales = ood[f"{axis}_scales"]
    F.plot_seeds(a, scales, ood[f"trained_{axis}"], "trained TF", F.COLORS["trained"])
    a.plot(scales, ood[f"gd_{axis}"], color=F.COLORS["gd"], ls="--", marker=".", label=f"GD-{k}")
    a.plot(
      scales, ood[f"gdpp_{axis}"], color=F.COLORS["gd++"], ls=":", marker=".", label=f"GD++-{k}"
    )
    a.set(xlabel=xl, ylabel="loss", yscale="log", title=f"{name}: out of distribution")
    a.legend()
  F.savefig(fig, paths.figures / f"{name}_ood.png", _note(paths, len(res["seeds"])))


def _products(name: str, res: dict, paths: PaperPaths) -> None:
  """Fig 9: β-rescaled weight products M_KQ = W_Q W_Kᵀ and M_PV = W_V P (seed 0)."""
  prods = res["weights"]["products_seed0"]
  fig, ax = F.subplots(1, 2, width=3.0, height=2.8)
  for i, (key, title) in enumerate((("m_kq", "W_Q W_Kᵀ / β"), ("m_pv", "β · W_V P"))):
    m = np.asarray(prods[key])
    lim = float(np.max(np.abs(m))) or 1.0
    im = ax[0, i].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[0, i].set(title=f"{name}: {title}", xticks=[], yticks=[])
    ax[0, i].grid(False)
    fig.colorbar(im, ax=ax[0, i], fraction=0.046)
  F.savefig(fig, paths.figures / f"{name}_products.png", _note(paths, 1, " · seed 0"))


def _fixed_task_sets(cfg: Config, paths: PaperPaths) -> None:
  """Fig 16: validation loss over training when trained on a fixed set of tasks."""
  names = [n for n in LSA_EXPERIMENTS if n.startswith("fig16_") and getattr(cfg, n).enabled]
  if not names:
    return
  fig, ax = F.subplots(1, 1, width=4.0)
  for i, name in enumerate(names):
    res = runlog.read_json(paths.results / f"{name}.json")
    c = res["curves"]["val_loss"]
    F.plot_seeds(ax[0, 0], c["step"], c["value"], f"{getattr(cfg, name).pool_size} tasks", f"C{i}")
  ax[0, 0].axhline(res["references"]["gd"]["loss"], color=F.COLORS["gd"], ls="--", label="GD-1")
  ax[0, 0].set(
    xlabel="training step", ylabel="validation loss", yscale="log", title="fixed training sets"
  )
  ax[0, 0].legend()
  F.savefig(fig, paths.figures / "fig16_fixed_task_sets.png", _note(paths, len(res["seeds"])))


def _dampening(res: dict, paths: PaperPaths) -> None:
  d = res["dampening"]
  fig, ax = F.subplots(1, len(d["lambdas"]))
  for i, lam in enumerate(d["lambdas"]):
    a = ax[0, i]
    trained = np.asarray([seed[i] for seed in d["trained"]])
    steps = np.arange(trained.shape[1])
    F.plot_seeds(a, steps, trained, "trained TF (repeated)", F.COLORS["trained"])
    a.plot(steps, d["gd"][i], color=F.COLORS["gd"], ls="--", label="GD steps")
    a.set(
      xlabel="applications / GD steps", ylabel="loss", yscale="log", title=f"dampening λ = {lam}"
    )
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
  ax[0, 1].plot(
    ns, [r["gdpp_gamma"] for r in rows], "--", color=F.COLORS["gd++"], label="fitted GD++ γ"
  )
  F.plot_published(ax[0, 1], pub, [PUBLISHED_GAMMA[n] for n in pub], "published TF γ")
  ax[0, 1].set(xlabel="N", ylabel="γ", title="curvature correction γ vs N")
  ax[0, 1].legend()
  F.savefig(fig, paths.figures / "fig13_gamma_vs_n.png", _note(paths, gam.shape[0]))


def render_all(cfg: Config, paths: PaperPaths) -> None:
  """Renders every figure whose results exist for this profile."""
  titles = {
    "fig2": "1-layer LSA vs GD-1",
    "fig3a": "recurrent 2-layer LSA",
    "fig3b": "5-layer LSA",
    "fig7": "recurrent 10-layer LSA",
    "fig8": "12 blocks LSA + MLP",
    "fig9": "recurrent 3-layer LSA",
    "fig12_softmax1": "1-head softmax SA",
    "fig12_softmax2": "2-head softmax SA",
    "fig14": "1-layer LSA with LayerNorm",
    "fig15_heads1": "1-head LSA (10 seeds)",
    "fig15_heads2": "2-head LSA (10 seeds)",
    "fig16_pool128": "128 fixed tasks",
    "fig16_pool8192": "8192 fixed tasks",
  }
  for name in LSA_EXPERIMENTS:
    path = paths.results / f"{name}.json"
    if getattr(cfg, name).enabled:
      res = runlog.read_json(path)
      _loss_and_alignment(name, res, paths, titles[name])
      if "ood" in res:
        _ood(name, res, paths)
      if "dampening" in res:
        _dampening(res, paths)
      if "weights" in res:
        _products(name, res, paths)
  _fixed_task_sets(cfg, paths)
  if cfg.gamma_vs_n.enabled:
    _gamma_vs_n(runlog.read_json(paths.results / "fig13.json"), paths)
  if cfg.sine.enabled:
    res = runlog.read_json(paths.results / "fig4.json")
    nonlinear.render_sine(res, paths.figures / "fig4_sine.png", _note(paths, len(res["seeds"])))
  if cfg.standard.enabled:
    res = runlog.read_json(paths.results / "fig5.json")
    nonlinear.render_standard(
      res, paths.figures / "fig5_standard_tokens.png", _note(paths, len(res["seeds"]))
    )

"""Figures of the mesa-optimization reproduction, rendered from results/<profile>/*.json only.

`python -m innerloop_mesa_optimization figures --profile cpu` regenerates them without
training. Published values [code] (sheet §5) are drawn as black crosses.
"""

from __future__ import annotations

import numpy as np

from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_mesa_optimization.config import LSA_DEPTHS, Config

# Sheet §5 [code] values drawn beside ours.
PUBLISHED_MESA_CURVE = [(0, 1.674), (200, 0.485), (300, 0.305), (400, 0.266), (500, 0.247),
                        (1300, 0.210), (4500, 0.190)]  # fmt: skip
PUBLISHED_LSA1_PER_T = [(10, 1.265), (20, 0.835), (30, 0.614), (40, 0.601), (50, 0.787)]
PUBLISHED_5B_LSQ = [0.0328, 0.0285, 0.0264, 0.0247, 0.0231, 0.0223]
PUBLISHED_5B_KR = [0.0798, 0.0780, 0.0844, 0.0947, 0.1076, 0.1150]
PUBLISHED_5B_NS = [4, 6, 10, 20, 40, 60]
PUBLISHED_PROBE_TARGET_LSA6 = [1.535, 0.49, 0.20, 0.043, 0.044, 0.029, 0.0075]


def _note(paths: PaperPaths, seeds: int) -> str:
  return f"innerloop mesa-optimization · profile {paths.profile} · {seeds} seed(s)"


def _read(paths: PaperPaths, name: str) -> dict | None:
  path = paths.results / f"{name}.json"
  return runlog.read_json(path) if path.is_file() else None


def _fig4a(paths: PaperPaths, lsa1: dict, mesa: dict | None) -> None:
  fig, ax = F.subplots(1, 1, width=4.2, height=3.0)
  a = ax[0, 0]
  c = lsa1["curves"]["test_loss"]
  F.plot_seeds(a, c["step"], c["value"], "LSA-1 (trained)", F.COLORS["trained"])
  a.axhline(
    lsa1["references"]["prop1"]["mean"], color=F.COLORS["gd"], ls="--", label="Prop-1 / GD-1"
  )
  a.axhline(lsa1["references"]["lsq"]["mean"], color=F.COLORS["gd++"], ls=":", label="ridge LSQ")
  if mesa is not None:
    m = mesa["curves"]["test_loss"]
    F.plot_seeds(a, m["step"], m["value"], "Mesa-1 (trained)", F.COLORS["other"])
    xs, ys = zip(*PUBLISHED_MESA_CURVE)
    F.plot_published(a, xs, ys, "Mesa-1 published [code]")
  a.set(xlabel="training step", ylabel="test loss (½ SE, mean over t)", yscale="log",
        title="Fig 4A: fully observed linear, T = 50")  # fmt: skip
  a.legend()
  F.savefig(fig, paths.figures / "fig4a_loss.png", _note(paths, len(lsa1["seeds"])))


def _per_t(a, res: dict, label: str, color: str, ls: str = "-") -> None:
  per_t = np.asarray(res["per_t"]["seeds"])
  F.plot_seeds(a, np.arange(1, per_t.shape[1] + 1), per_t, label, color, ls)


def _fig4c(paths: PaperPaths, lsa1: dict, name: str, title: str, published) -> None:
  refs = lsa1["references"]
  fig, ax = F.subplots(1, 1, width=4.2, height=3.0)
  a = ax[0, 0]
  _per_t(a, lsa1, "LSA-1 (trained)", F.COLORS["trained"])
  t = np.arange(1, len(refs["gd1"]["per_t"]) + 1)
  a.plot(t, refs["gd1"]["per_t"], color=F.COLORS["gd"], ls="--",
         label=f"GD-1 (η = {refs['gd1_eta']:.4f})")  # fmt: skip
  a.plot(t, refs["lsq"]["per_t"], color=F.COLORS["gd++"], ls=":", label="ridge LSQ")
  if published:
    xs, ys = zip(*published)
    F.plot_published(a, xs, ys, "LSA-1 published [code]")
  a.set(xlabel="t", ylabel="½‖ŝ_{t+1} − s_{t+1}‖²", yscale="log", title=title)
  a.legend()
  F.savefig(fig, paths.figures / f"{name}.png", _note(paths, len(lsa1["seeds"])))


def _fig4d(paths: PaperPaths, cfg: Config, runs: dict) -> None:
  fig, ax = F.subplots(1, 1, width=4.6, height=3.2)
  a = ax[0, 0]
  refs = runs["lsa1"]["references"]
  t = np.arange(1, len(refs["gd1"]["per_t"]) + 1)
  for i, (name, depth) in enumerate(LSA_DEPTHS):
    if name in runs:
      _per_t(a, runs[name], f"LSA-{depth}", f"C{i}")
      key = f"prop2_{depth}"
      if key in refs:
        a.plot(t, refs[key]["per_t"], color=f"C{i}", ls="--", label=f"Prop-2({depth})")
  if "mesa1" in runs:
    _per_t(a, runs["mesa1"], "Mesa-1", "k")
  a.plot(t, refs["lsq"]["per_t"], color="grey", ls=":", label="ridge LSQ")
  a.set(xlabel="t", ylabel="per-t loss", yscale="log", title="Fig 4D: depth vs Prop-2")
  a.legend(ncol=2)
  F.savefig(fig, paths.figures / "fig4d_depth.png", _note(paths, len(runs["lsa1"]["seeds"])))


def _fig4ef(paths: PaperPaths, name: str, res: dict) -> None:
  fig, ax = F.subplots(1, 2)
  layers = res["probes"][0]["layers"]
  x = np.arange(len(layers))
  for i, (key, title) in enumerate((("target", "Fig 4E: target s_{t+1}"),
                                    ("preconditioning", "Fig 4F: (SSᵀ+ρI)⁻¹ s_t"))):  # fmt: skip
    ys = np.asarray([p[key] for p in res["probes"]])
    F.plot_seeds(ax[0, i], x, ys, f"{name} probe", F.COLORS["trained"])
    if key == "target":
      F.plot_published(ax[0, i], np.arange(7), PUBLISHED_PROBE_TARGET_LSA6, "LSA-6 published")
    ticks = ["input"] + [f"L{k}" for k in range(1, max(len(layers), 7))]
    ax[0, i].set(xticks=np.arange(len(ticks)), xticklabels=ticks, ylabel="probe MSE at t = 50",
                 yscale="log", title=title)  # fmt: skip
    ax[0, i].legend()
  F.savefig(fig, paths.figures / f"fig4ef_probes_{name}.png", _note(paths, len(res["probes"])))


def _fig5b(paths: PaperPaths, res: dict) -> None:
  fig, ax = F.subplots(1, 1, width=4.0, height=3.0)
  a = ax[0, 0]
  a.plot(
    res["lsq_mean"]["x"], res["lsq_mean"]["y"], "o-", color=F.COLORS["gd++"], label="ridge LSQ"
  )
  a.plot(res["kr_mean"]["x"], res["kr_mean"]["y"], "s-", color=F.COLORS["gd"], label="softmax KR")
  F.plot_published(a, PUBLISHED_5B_NS, PUBLISHED_5B_LSQ, "LSQ published [code]")
  F.plot_published(a, PUBLISHED_5B_NS, PUBLISHED_5B_KR, "KR published [code]")
  a.set(xlabel="state width n_s (T = 4 n_s)", ylabel="½ MSE per dim, mean over t", yscale="log",
        title="Fig 5B: LSQ vs kernel regression")  # fmt: skip
  a.legend()
  F.savefig(fig, paths.figures / "fig5b_lsq_vs_kr.png", _note(paths, 1))


def render_all(cfg: Config, paths: PaperPaths) -> None:
  """Renders every figure whose results exist for this profile."""
  runs = {n: r for n in ("lsa1", "lsa2", "lsa4", "lsa6", "mesa1") if (r := _read(paths, n))}
  if "lsa1" in runs:
    _fig4a(paths, runs["lsa1"], runs.get("mesa1"))
    _fig4c(paths, runs["lsa1"], "fig4c_per_t", "Fig 4C: LSA-1 vs GD-1", PUBLISHED_LSA1_PER_T)
    _fig4d(paths, cfg, runs)
  for name in ("fixed_w", "contracting"):
    res = _read(paths, name)
    if res is not None:
      title = "E.2: fixed W" if name == "fixed_w" else "E.1: contracting W"
      _fig4c(paths, res, f"fig_e_{name}", title, None)
  for name, res in runs.items():
    if "probes" in res:
      _fig4ef(paths, name, res)
  res = _read(paths, "fig5b")
  if res is not None:
    _fig5b(paths, res)

"""Figures of the least-control reproduction, rendered from results/<profile>/*.json only.

`python -m innerloop_least_control figures --profile cpu` regenerates them without training.
The paper's Table 1/2 values are unknown to us (sheet §5), so no published marks are drawn.
"""

from __future__ import annotations

import numpy as np

from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_least_control.config import Config

METHOD_COLORS = {
  "bp": F.COLORS["gd"],
  "rbp": F.COLORS["gd"],
  "bptt": "#8c564b",
  "lcp-di": F.COLORS["trained"],
  "lcp-kp": F.COLORS["gd++"],
  "lcp-lf": F.COLORS["interpolated"],
  "lcp-lf-jac": "#bcbd22",
  "lcp-ebd": F.COLORS["other"],
  "ep": "#17becf",
}


def _note(paths: PaperPaths, res: dict) -> str:
  stand_in = "" if res["dataset"] in ("mnist", "cifar10") else " (stand-in for MNIST: deviation)"
  return (
    f"innerloop least-control · profile {paths.profile} · {res['dataset']}{stand_in} · "
    f"hidden {res['hidden']} · {len(res['seeds'])} seed(s) · final epoch, free equilibrium"
  )


def table_figure(res: dict, paths: PaperPaths, name: str = "table1") -> None:
  rows = res["rows"]
  fig, ax = F.subplots(1, 2, width=4.2, height=3.0)
  names = list(rows)
  for i, row_name in enumerate(names):
    accs = np.asarray(rows[row_name]["final_test_acc"])
    color = METHOD_COLORS[rows[row_name]["method"]]
    hatch = "//" if rows[row_name]["weak_control"] else None
    ax[0, 0].bar(i, accs.mean(), color=color, alpha=0.7, hatch=hatch)
    ax[0, 0].plot([i] * len(accs), accs, "k.", ms=3)
  lo = min(min(r["final_test_acc"]) for r in rows.values())
  ax[0, 0].set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
  title = "Table 1 analogue" if name == "table1" else "Table 2 (CIFAR-10)"
  ax[0, 0].set(ylabel="test accuracy (%)", ylim=(max(0, lo - 5), 100), title=title)
  for row_name, r in rows.items():
    ys = np.asarray(r["curve"]["test_acc"]).T  # seeds × evaluations
    style = "-" if r["arch"].startswith("rnn") else "--"
    F.plot_seeds(ax[0, 1], r["curve"]["epoch"], ys, row_name, METHOD_COLORS[r["method"]], style)
  ax[0, 1].set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(max(0, lo - 10), 100))
  ax[0, 1].legend(ncol=2, fontsize=5)
  F.savefig(fig, paths.figures / f"{name}.png", note=_note(paths, res))


def control_figure(res: dict, paths: PaperPaths) -> None:
  """Fig. 1 analogue: the least-control objective H = ½‖ψ*‖² before and after learning."""
  rows = {k: v for k, v in res["rows"].items() if "control_energy" in v}
  if not rows:
    return
  fig, ax = F.subplots(1, 1, width=4.2, height=3.0)
  for i, (_, r) in enumerate(rows.items()):
    init, final = r["control_energy"]["initial"], r["control_energy"]["final"]
    ax[0, 0].plot([i - 0.15] * len(init), init, "o", color="#999999", ms=3)
    ax[0, 0].plot([i + 0.15] * len(final), final, "o", color=METHOD_COLORS[r["method"]], ms=3)
  ax[0, 0].set_yscale("log")
  ax[0, 0].set_xticks(range(len(rows)), list(rows), rotation=60, ha="right", fontsize=6)
  ax[0, 0].set(ylabel="H = ½‖ψ*‖² per example", title="control needed: init (grey) vs trained")
  F.savefig(fig, paths.figures / "control_energy.png", note=_note(paths, res))


def alignment_figure(al: dict, paths: PaperPaths) -> None:
  fig, ax = F.subplots(1, 1, width=3.6, height=2.8)
  for label, curve in al["curves"].items():
    color = F.COLORS["trained"] if label == "trained" else F.COLORS["other"]
    ax[0, 0].plot(al["strengths"], curve["cosine"], "o-", color=color, label=f"rnn, {label}")
  ax[0, 0].axvline(10.0, color="#555555", ls=":", lw=1, label="paper's k_i/α = 10")
  ax[0, 0].set_xscale("log")
  ax[0, 0].set(
    xlabel="control strength k_i/α",
    ylabel="cos(LCP-DI update, −∇L)",
    title="alignment with the gradient",
  )
  ax[0, 0].legend()
  F.savefig(fig, paths.figures / "alignment.png", note=f"innerloop least-control · {paths.profile}")


def meta_figure(res: dict, paths: PaperPaths) -> None:
  """Query PSNR on held-out text images during meta-training, after the inner solve (solid)
  and at θ itself (dotted)."""
  fig, ax = F.subplots(1, 1, width=4.2, height=3.0)
  for row_name, r in res["rows"].items():
    color = METHOD_COLORS[r["method"]]
    steps = r["curve"]["step"]
    F.plot_seeds(ax[0, 0], steps, np.asarray(r["curve"]["test_psnr"]).T, row_name, color, "-")
    at_theta = np.asarray(r["curve"]["test_psnr_at_theta"]).T
    F.plot_seeds(ax[0, 0], steps, at_theta, f"{row_name} at θ", color, ":")
  ax[0, 0].set(xlabel="meta-step", ylabel="query PSNR (dB)", title="meta-learned INR")
  ax[0, 0].legend(fontsize=6)
  note = (
    f"innerloop least-control · profile {paths.profile} · text glyphs {res['images']['side']}² "
    f"(ours: the paper's set-up is unknown) · {res['num_weights']} fast weights"
  )
  F.savefig(fig, paths.figures / "meta_inr.png", note=note)


def fewshot_figure(res: dict, paths: PaperPaths) -> None:
  """Query accuracy on the fixed meta-test episodes during meta-training, after the inner
  solve, with pixel-space 1-nearest-neighbour on the same episodes for reference."""
  fig, ax = F.subplots(1, 1, width=5.0, height=3.0)
  for row_name, r in res["rows"].items():
    steps = r["curve"]["step"]
    acc = np.asarray(r["curve"]["test_acc"]).T
    F.plot_seeds(ax[0, 0], steps, acc, row_name, METHOD_COLORS[r["method"]], "-")
  ax[0, 0].axhline(res["pixel_nearest_neighbour_acc"], color="gray", ls=":", label="pixel 1-NN")
  ax[0, 0].axhline(100.0 / res["ways"], color="gray", ls="--", lw=0.8, label="chance")
  ways = res["ways"]
  ax[0, 0].set(xlabel="meta-step", ylabel="query accuracy (%)", title=f"{ways}-way 1-shot")
  ax[0, 0].legend(fontsize=6)
  data = "stroke glyphs (Omniglot stand-in)" if res["dataset"] == "glyphs" else "Omniglot"
  note = (
    f"innerloop least-control · {paths.profile} · {data} {res['side']}², "
    f"{res['classes']['test']} held-out classes · {res['num_weights']} fast weights"
  )
  F.savefig(fig, paths.figures / "meta_fewshot.png", note=note)


def render_all(cfg: Config, paths: PaperPaths) -> None:
  paths.figures.mkdir(parents=True, exist_ok=True)
  # A table whose user-provided data was absent holds only {"skipped": ...}: nothing to draw.
  if cfg.table.enabled:
    res = runlog.read_json(paths.results / "table1.json")
    if "skipped" not in res:
      table_figure(res, paths)
      control_figure(res, paths)
  for name, table in (("table2", cfg.table2), ("table2_rnn", cfg.table2_rnn)):
    if table.enabled:
      res = runlog.read_json(paths.results / f"{name}.json")
      if "skipped" not in res:
        table_figure(res, paths, name)
  if cfg.meta.enabled:
    meta_figure(runlog.read_json(paths.results / "meta.json"), paths)
  if cfg.fewshot.enabled:
    res = runlog.read_json(paths.results / "fewshot.json")
    if "skipped" not in res:
      fewshot_figure(res, paths)
  if cfg.alignment.enabled:
    al = runlog.read_json(paths.results / "alignment.json")
    if "skipped" not in al:
      alignment_figure(al, paths)

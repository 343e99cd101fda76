"""Figures of the online-lru reproduction, rendered from results/<profile>/*.json only.

`python -m innerloop_online_lru figures --profile cpu` regenerates them without training. The
paper's figure values are unknown to us (sheet §5), so no published points are drawn.
"""

from __future__ import annotations

import matplotlib
import numpy as np

from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_online_lru.config import Config
from innerloop_online_lru.pipeline import CLASSIFY, COPY

RULE_COLORS = {"bptt": "#222222", "online": "#1f77b4", "1-step": "#ff7f0e", "spatial": "#d62728"}


def _note(paths: PaperPaths, extra: str = "") -> str:
  return f"innerloop online-lru · profile {paths.profile}{extra}"


def fig2_alignment(res: dict, paths: PaperPaths) -> None:
  depths = res["depths"]
  fig, ax = F.subplots(1, 2)
  series = [
    (0, "cosine", "all parameters"),
    (0, "cosine_without_encoder", "without encoder"),
    (1, "norm_ratio", "all parameters"),
  ]
  for i, key, label in series:
    if key not in res:
      continue
    vals = np.array([res[key][f"L{d}"] for d in depths])  # [depths, seeds]
    ax[0, i].errorbar(depths, vals.mean(1), yerr=vals.std(1), marker="o", capsize=3, label=label)
    ax[0, i].plot(np.repeat(depths, vals.shape[1]), vals.ravel(), ".", color="#888", ms=3)
    ax[0, i].set(xlabel="number of layers L", xticks=depths)
  ax[0, 0].legend()
  ax[0, 0].set(ylabel="cosine(online, BPTT)", title="Fig 2B: alignment at init")
  ax[0, 1].set(ylabel="‖online‖ / ‖BPTT‖", title="gradient norm ratio at init")
  F.savefig(
    fig,
    paths.figures / "fig2_alignment_vs_depth.png",
    _note(paths, f" · {len(res['seeds'])} seeds"),
  )


def fig2_depth_sweep(res: dict, paths: PaperPaths) -> None:
  """Fig 2A/B as the paper runs it: accuracy and alignment vs depth, networks trained online."""
  depths = res["depths"]
  fig, ax = F.subplots(1, 4)

  def per_depth(i, values, label, color, linestyle="-"):
    vals = np.array([values[f"L{d}"] for d in depths])  # [depths, seeds]
    ax[0, i].errorbar(
      depths,
      vals.mean(1),
      yerr=vals.std(1),
      marker="o",
      capsize=3,
      label=label,
      color=color,
      linestyle=linestyle,
    )
    ax[0, i].plot(np.repeat(depths, vals.shape[1]), vals.ravel(), ".", color="#888", ms=3)
    ax[0, i].set(xlabel="number of layers L", xticks=depths)

  for rule, r in _ordered(res["rules"]).items():
    color = RULE_COLORS.get(rule, "#888888")
    per_depth(0, r["test_acc"], rule, color)
    per_depth(1, r["cos_bptt"], "during training", color)
    per_depth(1, r["cos_bptt_without_encoder"], "during training, without encoder", "#2ca02c")
    per_depth(1, r["cos_bptt_at_init"], "at init (step 0)", "#888888", ":")
    per_depth(2, r["norm_ratio_bptt"], "during training", color)
    per_depth(2, r["norm_ratio_bptt_at_init"], "at init (step 0)", "#888888", ":")
  shades = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(depths)))
  for d, shade in zip(depths, shades, strict=True):
    for rule, run in res["runs"][f"L{d}"]["rules"].items():
      c = run["curve"]
      F.plot_seeds(ax[0, 3], c["step"], np.array(c["cos_bptt"]).T, f"L={d} ({rule})", shade)
  ax[0, 0].legend()
  ax[0, 0].set(ylabel="test bit accuracy (best val)", title="Fig 2A: copy task, trained online")
  ax[0, 1].legend()
  ax[0, 1].set(ylabel="cosine(online, BPTT)", title="Fig 2B: alignment (mean over readings)")
  ax[0, 2].set(ylabel="‖online‖ / ‖BPTT‖", title="gradient norm ratio")
  ax[0, 3].legend()
  ax[0, 3].set(
    xlabel="training step", ylabel="cosine(online, BPTT)", title="alignment over training"
  )
  note = f" · T={res['T']} · {len(res['seeds'])} seeds · readings every eval after step 0"
  F.savefig(fig, paths.figures / "fig2_depth_sweep.png", _note(paths, note))


def _ordered(rules: dict) -> dict:
  """The rules in the paper's order (bptt, online, 1-step, spatial), whatever the JSON order."""
  order = list(RULE_COLORS)
  return {k: rules[k] for k in sorted(rules, key=lambda k: order.index(k) if k in order else 99)}


def copy_rules(name: str, res: dict, paths: PaperPaths) -> None:
  rules = _ordered(res["rules"])
  fig, ax = F.subplots(1, 3)
  for rule, r in rules.items():
    c = r["curve"]
    color = RULE_COLORS.get(rule, "#888888")
    F.plot_seeds(ax[0, 0], c["step"], np.array(c["val_acc"]).T, rule, color)
    if "cos_bptt" in c:
      F.plot_seeds(ax[0, 1], c["step"], np.array(c["cos_bptt"]).T, rule, color)
  ax[0, 0].set(xlabel="training step", ylabel="bit accuracy (val)", title="copy task")
  ax[0, 0].legend()
  ax[0, 1].set(xlabel="training step", ylabel="cosine with BPTT gradient", title="alignment")
  names = list(rules)
  acc = [np.array(rules[n]["best"]["test_acc"]) for n in names]
  ax[0, 2].bar(
    names,
    [a.mean() for a in acc],
    yerr=[a.std() for a in acc],
    color=[RULE_COLORS.get(n, "#888") for n in names],
    capsize=3,
  )
  for i, a in enumerate(acc):
    ax[0, 2].plot([i] * len(a), a, "k.", ms=3)
  cells = {
    "dense_linear": "dense linear RNN; online = SnAp-1",
    "gru": "GRU; online = SnAp-1",
    "gru_reference_snap": "GRU; SnAp-1 with σ(a)σ(1−a)",
  }
  cell = cells.get(res.get("cell"), "LRU")
  ax[0, 2].set(ylabel="test bit accuracy (best val)", ylim=(0.45, 1.0), title=f"Table 1 ({cell})")
  seeds = len(acc[0])
  t = res["T"]
  F.savefig(fig, paths.figures / f"{name}_rules.png", _note(paths, f" · T={t} · {seeds} seed(s)"))


def classify(name: str, res: dict, paths: PaperPaths) -> None:
  rules = _ordered(res["rules"])
  fig, ax = F.subplots(1, 2)
  for rule, r in rules.items():
    c = r["curve"]
    F.plot_seeds(ax[0, 0], c["step"], np.array(c["val_acc"]).T, rule, RULE_COLORS.get(rule, "#888"))
  ax[0, 0].set(xlabel="training step", ylabel="accuracy (val)", title=f"{name} ({res['task']})")
  ax[0, 0].legend()
  names = list(rules)
  acc = [np.array(rules[n]["best"]["test_acc"]) for n in names]
  ax[0, 1].bar(names, [a.mean() for a in acc], color=[RULE_COLORS.get(n, "#888") for n in names])
  ax[0, 1].set(ylabel="test accuracy (best val)", title="Table 2 cell")
  stand_in = " · STAND-IN, not LRA data" if res["task"] in ("digits", "listops_generated") else ""
  F.savefig(fig, paths.figures / f"{name}.png", _note(paths, stand_in))


def render_all(cfg: Config, paths: PaperPaths) -> None:
  """Renders every figure whose results exist for this profile."""
  paths.figures.mkdir(parents=True, exist_ok=True)
  if cfg.alignment.enabled:
    fig2_alignment(runlog.read_json(paths.results / "alignment.json"), paths)
  if cfg.depth_sweep.enabled:
    fig2_depth_sweep(runlog.read_json(paths.results / "depth_sweep.json"), paths)
  for name in COPY:
    if getattr(cfg, name).enabled:
      copy_rules(name, runlog.read_json(paths.results / f"{name}.json"), paths)
  for name in CLASSIFY:
    if getattr(cfg, name).enabled:
      res = runlog.read_json(paths.results / f"{name}.json")
      if res.get("status") != "data not provided":
        classify(name, res, paths)

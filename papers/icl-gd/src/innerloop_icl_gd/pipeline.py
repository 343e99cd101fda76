"""The train stage: every enabled experiment of a profile, in order, resumable."""

from __future__ import annotations

import sys

from innerloop_core.cli import PaperPaths
from innerloop_core.train import Deadline
from innerloop_icl_gd import experiments, nonlinear
from innerloop_icl_gd.config import LSA_EXPERIMENTS, Config


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs)
  for name in LSA_EXPERIMENTS:
    exp = getattr(cfg, name)
    if exp.enabled:
      res = experiments.train_experiment(name, cfg, exp, run_paths, deadline)
      print(
        f"[icl-gd] {name}: loss {res['final']['val_loss']} | GD-{exp.gd_steps} "
        f"{res['references']['gd']['loss']:.4f} | GD++ {res['references']['gdpp']['loss']:.4f}"
        f" | {res['wall_time_s']:.0f} s",
        file=sys.stderr,
      )
  if cfg.gamma_vs_n.enabled:
    experiments.gamma_vs_n(cfg, run_paths, deadline)
  if cfg.sine.enabled:
    nonlinear.train_sine(cfg, run_paths, deadline)
  if cfg.standard.enabled:
    nonlinear.train_standard_tokens(cfg, run_paths, deadline)

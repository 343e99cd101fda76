"""The train stage: every enabled experiment of a profile, in order, resumable."""

from __future__ import annotations

from innerloop_core.cli import PaperPaths
from innerloop_core.train import Deadline
from innerloop_online_lru import experiments
from innerloop_online_lru.config import Config

CLASSIFY = ("listops", "digits", "lra_listops", "lra_imdb", "lra_scifar", "table3_scifar_dense")


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs, root=paths.root)
  paths.results.mkdir(parents=True, exist_ok=True)
  if cfg.exactness.enabled:
    experiments.exactness(cfg, run_paths)
  if cfg.alignment.enabled:
    experiments.alignment_vs_depth(cfg, run_paths)
  for name in ("copy", "copy_dense"):
    exp = getattr(cfg, name)
    if exp.enabled:
      experiments.copy_experiment(name, exp, run_paths, deadline)
  for name in CLASSIFY:
    exp = getattr(cfg, name)
    if exp.enabled:
      experiments.classify_experiment(name, exp, cfg, run_paths, deadline)

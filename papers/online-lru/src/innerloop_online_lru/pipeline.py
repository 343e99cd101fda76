"""The train stage: every enabled experiment of a profile, in order, resumable."""

from __future__ import annotations

from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_core.config import fingerprint
from innerloop_core.train import Deadline
from innerloop_online_lru import experiments
from innerloop_online_lru.config import Config

COPY = ("copy", "copy_dense", "copy_gru", "copy_gru_reference", "copy_gru_1l")
CLASSIFY = ("listops", "digits", "lra_listops", "lra_imdb", "lra_scifar", "table3_scifar_dense")


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs, root=paths.root)
  paths.results.mkdir(parents=True, exist_ok=True)
  for name, measure in (
    ("exactness", experiments.exactness),
    ("alignment", experiments.alignment_vs_depth),
  ):
    if getattr(cfg, name).enabled:
      # Measured once per config (minutes at full size): resumed slices read it back.
      key = {"config": fingerprint(getattr(cfg, name))}
      out = runlog.cached_json(
        paths.runs / f"{name}.json", key, lambda m=measure: m(cfg, run_paths)
      )
      runlog.write_json(paths.results / f"{name}.json", out)
  for name in COPY:
    exp = getattr(cfg, name)
    if exp.enabled:
      experiments.copy_experiment(name, exp, run_paths, deadline)
  if cfg.depth_sweep.enabled:
    out = experiments.depth_sweep("depth_sweep", cfg.depth_sweep, run_paths, deadline)
    runlog.write_json(paths.results / "depth_sweep.json", out)
  for name in CLASSIFY:
    exp = getattr(cfg, name)
    if exp.enabled:
      experiments.classify_experiment(name, exp, cfg, run_paths, deadline)

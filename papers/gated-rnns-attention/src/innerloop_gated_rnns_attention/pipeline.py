"""The train stage: every experiment of a profile, in order, resumable."""

from __future__ import annotations

from innerloop_core.cli import PaperPaths
from innerloop_core.train import Deadline
from innerloop_gated_rnns_attention import experiments
from innerloop_gated_rnns_attention.config import Config


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs)
  experiments.construction(cfg, run_paths)
  if cfg.teacher_student.enabled:
    experiments.teacher_student(cfg, run_paths, deadline)
  if cfg.icl.enabled:
    experiments.icl(cfg, run_paths, deadline)

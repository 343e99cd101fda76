"""The train stage: identities, the Table-1 analogue, meta-learning, the alignment sweep
(resumable)."""

from __future__ import annotations

import sys

from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_core.train import Deadline
from innerloop_least_control import experiments
from innerloop_least_control.config import Config
from innerloop_tasks import images


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs)
  paths.results.mkdir(parents=True, exist_ok=True)
  if cfg.identities:
    ids = experiments.write_identities(run_paths)
    print(
      f"[least-control] identities: RBP vs BPTT {ids['rbp_vs_bptt_200_rel']:.1e}, "
      f"LCP theorem {ids['lcp_theorem_fd_rel']:.1e}, weak cosine "
      f"{ids['weak_control_cosine']:.6f} ({ids['wall_time_s']:.0f} s)",
      file=sys.stderr,
    )
  trained, ds = None, None
  if cfg.table.enabled:
    try:
      out = experiments.table1(cfg, run_paths, deadline, root=paths.root)
      trained, ds = out["trained_rnn_lcp_di"], out["dataset"]
    except images.DataNotProvided as e:
      # User-provided data (full profile) is absent: record the skip; the check says NOT RUN.
      print(f"[least-control] skipped Table 1 and the alignment: {e}", file=sys.stderr)
      runlog.write_json(paths.results / "table1.json", {"skipped": str(e)})
      runlog.write_json(paths.results / "alignment.json", {"skipped": str(e)})
  for name, table in (("table2", cfg.table2), ("table2_rnn", cfg.table2_rnn)):
    if not table.enabled:
      continue
    try:
      experiments.run_table(table, name, run_paths, deadline, root=paths.root)
    except images.DataNotProvided as e:
      print(f"[least-control] skipped {name}: {e}", file=sys.stderr)
      runlog.write_json(paths.results / f"{name}.json", {"skipped": str(e)})
  if cfg.meta.enabled:
    experiments.meta_learning(cfg.meta, run_paths, deadline)
  if cfg.fewshot.enabled:
    try:
      experiments.few_shot(cfg.fewshot, run_paths, deadline, root=paths.root)
    except images.DataNotProvided as e:
      print(f"[least-control] skipped the few-shot meta-learning: {e}", file=sys.stderr)
      runlog.write_json(paths.results / "fewshot.json", {"skipped": str(e)})
  if cfg.alignment.enabled and (ds is not None or not cfg.table.enabled):
    if ds is None:
      ds = experiments.load_dataset(cfg.table, paths.root)
    experiments.alignment(cfg, run_paths, ds, trained)

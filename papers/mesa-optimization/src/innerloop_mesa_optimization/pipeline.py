"""The train stage: α/β fits, reference solvers, every enabled model, Fig 5B; resumable."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core import runlog
from innerloop_core.cli import PaperPaths
from innerloop_core.config import fingerprint
from innerloop_core.train import Deadline
from innerloop_mesa_optimization import experiments, solvers
from innerloop_mesa_optimization.config import LSA_DEPTHS, RUNS, SEQ_RUNS, Config

_T0 = time.perf_counter()


def _log(msg: str) -> None:
  print(f"[mesa-optimization {time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr)


def train_all(cfg: Config, paths: PaperPaths, deadline: Deadline) -> None:
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs)
  probe_depth = cfg.probe_chebyshev_steps + 1
  coeffs, fits = {}, {}
  for depth in sorted(set(cfg.prop2_depths) | {probe_depth}):

    def fit(depth=depth):
      c, history = experiments.fit_prop2(cfg, depth, jax.random.key(7000 + depth))
      return {
        "alpha": np.asarray(c.alpha).tolist(),
        "beta": np.asarray(c.beta).tolist(),
        "fit_loss_first": history[0] if history else None,
        "fit_loss_last": float(np.mean(history[-20:])) if history else None,
      }

    # Fitted once per config: a resumed slice reads the fit back instead of refitting.
    key = {"config": fingerprint(cfg), "depth": depth}
    fits[str(depth)] = runlog.cached_json(paths.runs / f"prop2_fit_{depth}.json", key, fit)
    coeffs[depth] = solvers.Chebyshev(
      jnp.asarray(fits[str(depth)]["alpha"], jnp.float32),
      jnp.asarray(fits[str(depth)]["beta"], jnp.float32),
    )
    _log(f"Prop-2({depth}) fitted: α {fits[str(depth)]['alpha']} β {fits[str(depth)]['beta']}")
  runlog.write_json(paths.results / "prop2_fit.json", fits)

  tests, refs = {}, {}

  def family_refs(family):
    if family not in refs:
      tests[family] = experiments.test_states(cfg, family)
      prop2 = {d: coeffs[d] for d in cfg.prop2_depths} if family.value == "linear" else {}
      refs[family] = experiments.references(cfg, tests[family], prop2)
      runlog.write_json(paths.results / f"references_{family.value}.json", refs[family])
    return tests[family], refs[family]

  family_refs(experiments.dyn.TaskFamily.LINEAR)  # the fully observed family, always
  finals, t50 = {}, {}
  for name in RUNS:
    run = getattr(cfg, name)
    if not run.enabled:
      continue
    test, ref = family_refs(run.family)
    out, result = experiments.train_run(name, cfg, run, run_paths, deadline, test, ref)
    if run.probes:
      out["probes"] = experiments.probe_run(cfg, result, test, coeffs[probe_depth])
      out["probe_summary"] = {
        k: [p[k] for p in out["probes"]]
        for k in (
          "target_max_step_ratio",
          "target_last_over_input",
          "preconditioning_last_over_input",
        )
      }
      out["probe_summary"]["target_input"] = [p["target"][0] for p in out["probes"]]
      out["probe_summary"]["preconditioning_input"] = [
        p["preconditioning"][0] for p in out["probes"]
      ]
    runlog.write_json(paths.results / f"{name}.json", out)
    finals[name] = float(np.mean(out["final"]["test_loss"]))
    t50[name] = out["per_t"]["t_last"]
    _log(
      f"{name}: test loss {finals[name]:.4f} | t=50 {out['per_t']['t_last']:.4f} | "
      f"GD-1 {ref['gd1']['mean']:.4f} | {out['wall_time_s']:.0f} s"
    )
  for name in SEQ_RUNS:
    run = getattr(cfg, name)
    if not run.enabled:
      continue
    test, ref = family_refs(run.family)
    out = experiments.train_seq_run(name, cfg, run, run_paths, deadline, test, ref)
    runlog.write_json(paths.results / f"{name}.json", out)
    finals[name] = float(np.mean(out["final"]["test_loss"]))
    t50[name] = out["per_t"]["t_last"]
    _log(
      f"{name}: test loss {finals[name]:.4f} | t=50 {t50[name]:.4f} | {out['wall_time_s']:.0f} s"
    )
  if cfg.fig5b.enabled:
    res = experiments.fig5b(cfg, cfg.fig5b)
    runlog.write_json(paths.results / "fig5b.json", res)
    _log(f"fig5b: KR/LSQ {['%.2f' % r for r in res['kr_over_lsq']]}")
  summary = {"final_test_loss": finals}
  linear_refs = refs[experiments.dyn.TaskFamily.LINEAR]
  if "transformer7" in t50:
    if "prop2_7" in linear_refs:
      summary["transformer7_over_prop2_t50"] = t50["transformer7"] / linear_refs["prop2_7"]["t50"]
    if "hybrid" in t50:
      summary["hybrid_over_transformer7_t50"] = t50["hybrid"] / t50["transformer7"]
  for name, depth in LSA_DEPTHS:
    if name in t50 and f"prop2_{depth}" in linear_refs:
      summary[f"{name}_over_prop2_t50"] = t50[name] / linear_refs[f"prop2_{depth}"]["t50"]
  if "mesa1" in finals and "lsa1" in finals:
    summary["mesa1_over_lsa1"] = finals["mesa1"] / finals["lsa1"]
  runlog.write_json(paths.results / "summary.json", summary)

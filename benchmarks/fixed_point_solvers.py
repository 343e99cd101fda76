"""Picard vs Anderson on the equilibrium RNN of least-control (batch 64, hidden 256).

Command (from the repo root):
    uv run python benchmarks/fixed_point_solvers.py [--reps N]

Prints one Markdown table, baseline (Picard) and Anderson measured in the same run:
  - it/s: evaluations of f per second with the stop rule disabled (tol 0, 200 iterations),
    i.e. the raw cost of one iteration of each solver (Anderson adds a small least-squares
    solve per step);
  - time-to-tolerance: wall time and iterations until the relative residual of the sheet,
    max_b ‖f(v)_b − v_b‖ / (1e-5 + ‖v_b‖), falls below 1e-4 and 1e-6 (max 5000 iterations).
Problems (MNIST-sized inputs, 784 features, random N(0, 1) pixels scaled to [0, 1]):
  - "free, init": the free equilibrium v = f(x, v) at the torch-style initialisation;
  - "free, ρ≈0.97": the same with W rescaled to spectral norm 0.97 (slow contraction, as
    after training lets the recurrent weights grow);
  - "LCP-DI controlled": the controlled dynamics (v, y, u_i, e) of LCP-DI, α = 0.1, k_i = 1.
Every figure is the median of timed reps after a warm-up call (compilation excluded); a
script run on demand, not a test. Timings on a shared machine vary by about ±10%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from innerloop_core.fixed_point import Solver, SolverConfig, solve
from innerloop_least_control import methods as M
from innerloop_least_control.model import Arch, ModelConfig, implicit_map, init_params, zero_state

BATCH, HIDDEN, INPUT = 64, 256, 784


def _time(fn, reps: int) -> tuple[float, object]:
  out = jax.block_until_ready(fn())  # warm-up (compiles)
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def problems():
  cfg = ModelConfig(arch=Arch.RNN, input_dim=INPUT, hidden=HIDDEN)
  p = init_params(cfg, jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (BATCH, INPUT))
  labels = jax.random.randint(jax.random.key(2), (BATCH,), 0, 10)
  slow = {**p, "w": 0.97 * p["w"] / jnp.linalg.norm(p["w"], 2)}

  def free(params):
    return lambda cfg_s: solve(
      lambda v: implicit_map(params, x, v, Arch.RNN), zero_state(x, cfg), cfg_s
    )

  def controlled(cfg_s):
    ctrl = M.ControlConfig(alpha=0.1, k_i=1.0, solver=cfg_s)
    return M.controlled_equilibrium(p, x, labels, cfg, ctrl, M.Method.LCP_DI)[1]

  return {"free, init": free(p), "free, ρ≈0.97": free(slow), "LCP-DI controlled": controlled}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--reps", type=int, default=5)
  args = ap.parse_args()
  print(
    f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPU threads; "
    f"load average {os.getloadavg()[0]:.2f} at start"
  )
  header = "| problem | solver | it/s (200 its) | tol 1e-4: its | ms | tol 1e-6: its | ms |"
  print(header)
  print("|" + "---|" * 7)
  for name, run in problems().items():
    for solver in Solver:
      per_leaf = name.startswith("LCP")
      raw_cfg = SolverConfig(solver, tol=0.0, max_iter=200, per_leaf=per_leaf)
      raw = jax.jit(lambda: run(raw_cfg))
      t_raw, _ = _time(raw, args.reps)
      cells = [f"{200 / t_raw:,.0f}"]
      for tol in (1e-4, 1e-6):
        c = SolverConfig(solver, tol=tol, max_iter=5000, per_leaf=per_leaf)
        fn = jax.jit(lambda c=c: run(c))
        t, sol = _time(fn, args.reps)
        flag = "" if float(sol.residual) < tol else " (not reached)"
        cells += [f"{int(sol.iterations)}{flag}", f"{1e3 * t:.1f}"]
      print(f"| {name} | {solver.value} | " + " | ".join(cells) + " |")
  print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
  main()

"""Forward+backward wall time of ``innerloop_core.mesa.mesa_layer`` for every MesaImpl.

Command (from the repo root; on the shared 2-core machine under the CPU lock):
    flock /work/wt/notes/cpu.lock uv run python benchmarks/mesa_layer.py [--quick] [--reps N]
        [--lengths 50,224,1024] [--gamma]

Measures, in one run, at the paper's sizes (von Oswald et al. 2023: H = 4 heads, K = V = 20,
D = 40; batch 64 at every T and also 256 at T = 50), float32:
  ``jax.jit(jax.grad(L))`` with L = Σ g ⊙ mesa_layer(e, W_q, W_k, W_v, W_p, λ) for a fixed
  random cotangent g, gradients w.r.t. all six inputs (one training step's layer work), for
  T ∈ {50, 224, 1024}.
Prints one Markdown table: compile time (first call, separately), the median ms per call of
the timed reps after a warm-up call, and the ratio to the fastest implementation of the same
size in this run (AUTO included, labelled with what it resolves to). ``--gamma`` adds forget
factors γ = σ(·) drawn at random.

It is a script run on demand, not a test; timings on a shared machine vary by about ±10%.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.mesa import MesaImpl, _auto_impl, mesa_layer

HEADS, KEY, VALUE, WIDTH = 4, 20, 20, 40
SIZES = ((64, 50), (256, 50), (64, 224), (64, 1024))  # (batch, T)


def inputs(batch: int, length: int, gamma: bool):
  """e [B, T, D], the weights, λ [H], γ [B, H, T] or None, and the cotangent [B, T, D]."""
  rng = np.random.default_rng(0)

  def normal(*shape, scale=1.0):
    return jnp.asarray(scale * rng.normal(size=shape), jnp.float32)

  e = normal(batch, length, WIDTH)
  # Projections scaled by 1/√D so that keys are O(1), as in a trained layer's regime.
  s = WIDTH**-0.5
  w_q, w_k = normal(HEADS, WIDTH, KEY, scale=s), normal(HEADS, WIDTH, KEY, scale=s)
  w_v, w_p = normal(HEADS, WIDTH, VALUE, scale=s), normal(HEADS, VALUE, WIDTH, scale=s)
  lam = jnp.ones((HEADS,), jnp.float32)
  forget = jax.nn.sigmoid(normal(batch, HEADS, length) + 3.0) if gamma else None
  return (e, w_q, w_k, w_v, w_p, lam), forget, normal(batch, length, WIDTH)


@dataclasses.dataclass(frozen=True)
class Row:
  batch: int
  length: int
  impl: str
  compile_s: float
  ms: float


def bench(batch: int, length: int, impl: MesaImpl, reps: int, gamma: bool) -> Row:
  args, forget, cotangent = inputs(batch, length, gamma)

  def loss(*args):
    return jnp.sum(cotangent * mesa_layer(*args, gamma=forget, impl=impl))

  step = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
  t0 = time.perf_counter()
  jax.block_until_ready(step(*args))
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(step(*args))  # warm-up
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - t0)
  name = impl.value
  if impl is MesaImpl.AUTO:
    name = f"auto -> {_auto_impl(jax.default_backend(), length).value}"
  return Row(batch, length, name, compile_s, 1e3 * statistics.median(times))


def table(rows: list[Row]) -> str:
  lines = [
    "| B | T | impl | compile s | ms / fwd+bwd | × fastest |",
    "|---:|---:|---|---:|---:|---:|",
  ]
  by_size: dict[tuple[int, int], list[Row]] = {}
  for r in rows:
    by_size.setdefault((r.batch, r.length), []).append(r)
  for group in by_size.values():
    best = min(r.ms for r in group)
    for r in group:
      mark = " **fastest**" if r.ms == best else ""
      lines.append(
        f"| {r.batch} | {r.length} | {r.impl}{mark} | {r.compile_s:.1f} | {r.ms:.1f}"
        f" | {r.ms / best:.2f} |"
      )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer timed reps (3)")
  parser.add_argument("--reps", type=int, default=None, help="timed reps per benchmark")
  parser.add_argument("--lengths", default="50,224,1024", help="comma-separated T to run")
  parser.add_argument("--gamma", action="store_true", help="with random forget factors")
  args = parser.parse_args()
  reps = args.reps or (3 if args.quick else 7)
  lengths = {int(t) for t in args.lengths.split(",")}

  dev = jax.devices()[0]
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  print(
    f"jax {jax.__version__} | backend {jax.default_backend()} | device {dev.device_kind}"
    f" | cpu count {os.cpu_count()} | load average {load} | H={HEADS} K={KEY} V={VALUE}"
    f" D={WIDTH} | float32 | gamma {args.gamma} | reps {reps}"
  )
  impls = [MesaImpl.SCAN, MesaImpl.SCAN_REVERSE, MesaImpl.GRAM_SOLVE, MesaImpl.AUTO]
  rows = []
  for batch, length in SIZES:
    if length not in lengths:
      continue
    for impl in impls:
      row = bench(batch, length, impl, reps, args.gamma)
      rows.append(row)
      print(f"  B={batch} T={length} {row.impl}: {row.ms:.1f} ms", flush=True)
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  print(f"\nload average at the end: {load}\n")
  print(table(rows))


if __name__ == "__main__":
  main()

"""Forward+backward throughput of ``innerloop_core.scans.linear_scan`` vs this machine's bandwidth.

Command (from the repo root):
    uv run python benchmarks/scan_throughput.py [--quick] [--reps N] [--chunk-sizes 16,64,256]

Measures, in one run, and prints one Markdown table:
  1. the ceiling: a jitted ``x + 1`` over a 256 MB float32 array (one read + one write of
     every byte) -> GB/s;
  2. ``jax.grad`` of Σ g ⊙ h (g a fixed random cotangent) w.r.t. (a, b) through
     ``linear_scan`` for every ScanImpl, B=8, N=256, T ∈ {256, 1024, 4096, 16384}, float32,
     plus complex64 at T=1024: ms/call, elements/s (B·T·N / s) and % of the bandwidth bound.

The bound counts the fewest full-size [B, T, N] arrays any fwd+bwd must move: read a, b
and write h (forward); read g, a, h and write ∂a, ∂b (backward) = 8 arrays, so
bound elements/s = bandwidth / (8 · itemsize). The last columns compare AUTO with the best
measured implementation at that size (the target is AUTO ≥ 90% of the best). The bound is
measured on 256 MB, far beyond cache; at small T the scan's arrays (8 MB at T=1024) partly
stay in cache, so more than 100% of it is possible there.

Every figure is the median of timed reps after warm-up calls (compilation excluded).
It is a script run on demand, not a test; timings on a shared machine vary by about ±10%.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.scans import ScanImpl, _auto_impl, linear_scan

BATCH = 8
STATE = 256
LENGTHS = (256, 1024, 4096, 16384)
COMPLEX_LENGTH = 1024
COPY_BYTES = 256 * 2**20
ARRAYS_MOVED = 8  # see the module docstring


def time_ms(call: Callable[[], Any], reps: int, warmup: int = 2) -> float:
  """Median wall time in ms of `call()`, result blocked on; warm-up calls compile."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def bandwidth_gbs(reps: int) -> float:
  """GB/s of a jitted elementwise pass over COPY_BYTES of float32 (read + write)."""
  x = jnp.ones(COPY_BYTES // 4, jnp.float32)
  # `+ 1` rather than `+ 0`: XLA folds x + 0 to x, which would time a plain copy at best.
  f = jax.jit(lambda x: x + 1)
  ms = time_ms(lambda: f(x), reps)
  return 2 * COPY_BYTES / (ms * 1e-3) / 1e9


def scan_inputs(length: int, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """a (|a| in [0.5, 1)), b and the cotangent g, all [B, T, N]."""
  rng = np.random.default_rng(0)
  shape = (BATCH, length, STATE)
  mag = rng.uniform(0.5, 1.0, size=shape)
  if np.issubdtype(dtype, np.complexfloating):
    a = mag * np.exp(1j * rng.uniform(-np.pi, np.pi, size=shape))
    b = rng.normal(size=shape) + 1j * rng.normal(size=shape)
  else:
    a, b = mag, rng.normal(size=shape)
  g = rng.normal(size=shape)
  return jnp.asarray(a, dtype), jnp.asarray(b, dtype), jnp.asarray(g, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Row:
  dtype: str
  length: int
  impl: str
  ms: float
  elements_per_s: float
  pct_of_bound: float


def bench(length: int, dtype, impl: ScanImpl, chunk_size: int, reps: int, gbs: float) -> Row:
  a, b, g = scan_inputs(length, dtype)

  def loss(a, b):
    h, _ = linear_scan(a, b, impl=impl, chunk_size=chunk_size)
    return jnp.sum(jnp.real(g * h))

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  ms = time_ms(lambda: step(a, b), reps)
  elements = BATCH * length * STATE
  rate = elements / (ms * 1e-3)
  bound = gbs * 1e9 / (ARRAYS_MOVED * jnp.dtype(dtype).itemsize)
  name = impl.value + (f" (C={chunk_size})" if impl is ScanImpl.CHUNKED else "")
  return Row(jnp.dtype(dtype).name, length, name, ms, rate, 100 * rate / bound)


def table(rows: list[Row]) -> str:
  lines = [
    "| dtype | T | impl | ms/call | Melem/s | % of bw bound | AUTO / best |",
    "|---|---:|---|---:|---:|---:|---:|",
  ]
  by_size: dict[tuple[str, int], list[Row]] = {}
  for r in rows:
    by_size.setdefault((r.dtype, r.length), []).append(r)
  for group in by_size.values():
    best = max(r.elements_per_s for r in group if not r.impl.startswith("auto"))
    for r in group:
      ratio = f"{r.elements_per_s / best:.2f}" if r.impl.startswith("auto") else ""
      mark = " **best**" if r.elements_per_s == best else ""
      lines.append(
        f"| {r.dtype} | {r.length} | {r.impl}{mark} | {r.ms:.2f} | {r.elements_per_s / 1e6:.0f}"
        f" | {r.pct_of_bound:.1f} | {ratio} |"
      )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer timed reps (3)")
  parser.add_argument("--reps", type=int, default=None, help="timed reps per benchmark")
  parser.add_argument(
    "--chunk-sizes", default="64", help="comma-separated chunk sizes for CHUNKED (default 64)"
  )
  args = parser.parse_args()
  reps = args.reps or (3 if args.quick else 10)
  chunk_sizes = [int(c) for c in args.chunk_sizes.split(",")]

  dev = jax.devices()[0]
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  print(
    f"jax {jax.__version__} | backend {jax.default_backend()} | device {dev.device_kind}"
    f" | cpu count {os.cpu_count()} | load average {load} | B={BATCH} N={STATE} | reps {reps}"
  )
  gbs = bandwidth_gbs(reps)
  print(f"bandwidth ceiling (jit x + 1, {COPY_BYTES >> 20} MB float32): {gbs:.1f} GB/s\n")

  configs = [(t, jnp.float32) for t in LENGTHS] + [(COMPLEX_LENGTH, jnp.complex64)]
  rows = []
  for length, dtype in configs:
    impls = [(ScanImpl.SEQUENTIAL, 64), (ScanImpl.ASSOCIATIVE, 64)]
    impls += [(ScanImpl.CHUNKED, c) for c in chunk_sizes] + [(ScanImpl.AUTO, 64)]
    for impl, c in impls:
      row = bench(length, dtype, impl, c, reps, gbs)
      if impl is ScanImpl.AUTO:
        chosen = _auto_impl(jax.default_backend(), length).value
        row = dataclasses.replace(row, impl=f"auto -> {chosen}")
      rows.append(row)
      print(f"  {row.dtype} T={row.length} {row.impl}: {row.ms:.2f} ms", flush=True)
  print()
  print(table(rows))


if __name__ == "__main__":
  main()

"""Throughput of the attention layers and the icl-gd train step vs this machine's matmul rate.

Command (from the repo root):
    uv run python benchmarks/attention_throughput.py [--quick] [--reps N]

Measures, in one run, and prints one Markdown table:
  1. the ceiling: fp32 matmul 2048x2048 @ 2048x2048 (jit) -> GFLOP/s;
  2. forward+backward of ``linear_attention`` / ``softmax_attention`` on icl-gd tokens
     [B=2048, T=11, D=11], K=V=11, ``Mask.CONTEXT_ONLY`` with N=10, for H=1 and H=2:
     ms/call, tokens/s, achieved GFLOP/s (analytic matmul FLOPs) and % of the ceiling;
  3. the icl-gd train step built as ``innerloop_core.train.train`` builds it (split NNX
     state, ``value_and_grad`` over the state, optax update, seeds vmapped), batch 2048,
     with the batch sampled inside the jitted step (as the loop does) and precomputed.

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
import optax
from flax import nnx

from innerloop_core.attention import Mask, linear_attention, softmax_attention
from innerloop_core.optim import make_optimizer
from innerloop_core.train import seed_keys
from innerloop_icl_gd import gd
from innerloop_icl_gd.config import Config, Experiment, optimizer_for
from innerloop_icl_gd.experiments import build_transformer, task_sampler, transformer_predict

# The icl-gd setting: B tasks, N context pairs + 1 query = T tokens of width D = Dx + Dy.
BATCH, NUM_CONTEXT, DIM = 2048, 10, 11
TOKENS = NUM_CONTEXT + 1
MATMUL_N = 2048

# Authors' JAX code on a 2-core machine of this class, batch 2048, no data generation
# (project design notes).
REFERENCE_MS = {"1-layer LSA": 6.6, "5-layer LSA": 51.0}


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  ms: float  # median wall time of one call
  best_ms: float  # fastest call (least disturbed by other load on the machine)
  tokens: int | None = None  # tokens processed per call
  flops: float | None = None  # analytic matmul FLOPs per call
  reference: str = ""


# ---------------------------------------------------------------------------------------
# Timing and FLOP counting
# ---------------------------------------------------------------------------------------


def time_ms(call: Callable[[], Any], reps: int, warmup: int = 2) -> tuple[float, float]:
  """(median, min) wall time in ms of `call()`, result blocked on; warm-up calls compile."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times), 1e3 * min(times)


def attention_forward_flops(
  batch: int, tokens: int, keys: int, dim: int, heads: int, key_size: int, value_size: int
) -> int:
  """Matmul FLOPs (2 per multiply-add) of one attention forward pass (linear or softmax).

  q: 2·B·T·D·H·K   k: 2·B·N·D·H·K   v: 2·B·N·D·H·V
  scores q·k: 2·B·H·T·N·K   Σ scores·v: 2·B·H·T·N·V   output ·W_p: 2·B·T·H·V·D
  (N = key tokens.) Softmax's exp/normalisation and the masking are not counted.
  Forward+backward ≈ 3× this: each product C = A·B adds dA = dC·Bᵀ and dB = Aᵀ·dC of the
  same size (exact when gradients flow to both operands, as in the layer benchmark).
  """
  b, t, n, d, h, k, v = batch, tokens, keys, dim, heads, key_size, value_size
  projections = 2 * b * t * d * h * k + 2 * b * n * d * h * k + 2 * b * n * d * h * v
  mixing = 2 * b * h * t * n * k + 2 * b * h * t * n * v
  output = 2 * b * t * h * v * d
  return projections + mixing + output


# ---------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------


def bench_matmul(reps: int) -> Row:
  """The ceiling: fp32 [n, n] @ [n, n], 2·n³ FLOPs."""
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (MATMUL_N, MATMUL_N), jnp.float32)
  b = jax.random.normal(kb, (MATMUL_N, MATMUL_N), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  times = time_ms(lambda: matmul(a, b), max(reps, 5))
  return Row(f"matmul fp32 {MATMUL_N}³ (ceiling)", *times, flops=2.0 * MATMUL_N**3)


def bench_attention(kind: str, heads: int, reps: int) -> Row:
  """Forward+backward (grads w.r.t. tokens and all four weights) of one attention layer."""
  attend = linear_attention if kind == "linear" else softmax_attention
  keys = jax.random.split(jax.random.key(1), 5)
  e = jax.random.uniform(keys[0], (BATCH, TOKENS, DIM), jnp.float32, -0.5, 0.5)
  shapes = [(heads, DIM, DIM)] * 4  # K = V = D = 11
  weights = [0.1 * jax.random.normal(k, s, jnp.float32) for k, s in zip(keys[1:], shapes)]

  def loss(e, w_q, w_k, w_v, w_p):
    out = attend(e, w_q, w_k, w_v, w_p, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT)
    return 0.5 * jnp.sum(out**2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
  times = time_ms(lambda: grad(e, *weights), reps)
  flops = 3 * attention_forward_flops(BATCH, TOKENS, NUM_CONTEXT, DIM, heads, DIM, DIM)
  return Row(f"{kind} attention H={heads} fwd+bwd", *times, BATCH * TOKENS, flops)


def bench_sampler(exp: Experiment, reps: int) -> Row:
  """The task sampler alone (what 'with data' adds to a 1-seed step, before fusion)."""
  sample = jax.jit(task_sampler(exp, exp.batch_size))
  times = time_ms(lambda: sample(jax.random.key(3)), reps)
  return Row(f"task sampler B={exp.batch_size} (alone)", *times, exp.batch_size * TOKENS)


def make_train_step(
  exp: Experiment, cfg: Config, num_seeds: int, with_data: bool
) -> Callable[[], Any]:
  """A zero-argument closure running one jitted train step, as `innerloop_core.train` does."""
  sample = task_sampler(exp, exp.batch_size)
  optimizer = make_optimizer(
    optimizer_for(
      cfg.optim_convention, exp.model.num_layers, exp.learning_rate, exp.clip_global_norm
    ),
    exp.steps,
  )
  init = lambda key: build_transformer(exp, key)  # noqa: E731
  seeds = range(num_seeds)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: init(jax.random.key(0))))
  params = jax.vmap(lambda k: nnx.state(init(k)))(seed_keys(seeds, 0))
  opt_state = jax.vmap(optimizer.init)(params)
  data_keys = seed_keys(seeds, 1)

  def update(params, opt_state, batch):
    value, grads = jax.value_and_grad(
      lambda p: gd.query_loss(transformer_predict(nnx.merge(graphdef, p), batch), batch.y_query)
    )(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  if with_data:

    def step_one(params, opt_state, data_key, step):
      return update(params, opt_state, sample(jax.random.fold_in(data_key, step)))

    step_fn = jax.jit(jax.vmap(step_one, in_axes=(0, 0, 0, None)), donate_argnums=(0, 1))
    extra = lambda t: (data_keys, t)  # noqa: E731
  else:
    batch = jax.vmap(lambda k: sample(jax.random.fold_in(k, 0)))(data_keys)
    step_fn = jax.jit(jax.vmap(update), donate_argnums=(0, 1))
    extra = lambda t: (batch,)  # noqa: E731

  state = {"params": params, "opt_state": opt_state, "step": 0}

  def call():
    p, o, value = step_fn(state["params"], state["opt_state"], *extra(state["step"]))
    state.update(params=p, opt_state=o, step=state["step"] + 1)
    return p, o, value

  return call


def bench_train_step(
  label: str, exp: Experiment, cfg: Config, num_seeds: int, with_data: bool, reps: int
) -> Row:
  """ms/step of the icl-gd train step.

  FLOPs = seeds × layer applications × 3 × attention forward, counted as written (all T
  tokens in every layer; optimizer and sampler not counted). XLA's own cost analysis of
  the compiled gradient agrees within ~20% (1 layer: 77 vs 92 MFLOP; 5 layers: 493 vs 461).
  """
  times = time_ms(make_train_step(exp, cfg, num_seeds, with_data), reps)
  m = exp.model
  forward = attention_forward_flops(
    exp.batch_size, TOKENS, NUM_CONTEXT, DIM, m.num_heads, m.key_size, m.key_size
  )
  flops = num_seeds * m.num_layers * 3 * forward
  ref = REFERENCE_MS.get(label)
  reference = f"≈ {ref:g} ms (authors, no data gen)" if ref and num_seeds == 1 else ""
  seeds = f"{num_seeds} seed{'s' if num_seeds > 1 else ''}"
  data = "data in step" if with_data else "batch precomputed"
  return Row(
    f"train step {label}, {seeds}, {data}",
    *times,
    num_seeds * exp.batch_size * TOKENS,
    flops,
    reference,
  )


def train_step_rows(reps: int) -> list[Row]:
  cfg = Config()
  setups = [
    ("1-layer LSA", cfg.fig2, 1),
    ("1-layer LSA", cfg.fig2, 2),
    ("recurrent 2-layer LSA", cfg.fig3a, 1),
    ("5-layer LSA", cfg.fig3b, 1),
  ]
  return [
    bench_train_step(label, dataclasses.replace(exp, batch_size=BATCH), cfg, seeds, with_data, reps)
    for label, exp, seeds in setups
    for with_data in (True, False)
  ]


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def header() -> str:
  dev = jax.devices()[0]
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  return (
    f"jax {jax.__version__} | backend {jax.default_backend()} | device {dev.device_kind}"
    f" | cpu count {os.cpu_count()} | load average {load}"
  )


def table(rows: list[Row], ceiling_gflops: float) -> str:
  lines = [
    "| benchmark | ms/call | best ms | calls/s | Mtokens/s | GFLOP/s | % of matmul | reference |",
    "|---|---:|---:|---:|---:|---:|---:|---|",
  ]
  for r in rows:
    tok = f"{r.tokens / r.ms / 1e3:.2f}" if r.tokens else ""
    gflops = r.flops / r.ms / 1e6 if r.flops else None
    g = f"{gflops:.1f}" if gflops else ""
    pct = f"{100 * gflops / ceiling_gflops:.1f}" if gflops else ""
    lines.append(
      f"| {r.name} | {r.ms:.2f} | {r.best_ms:.2f} | {1e3 / r.ms:.1f} | {tok} "
      f"| {g} | {pct} | {r.reference} |"
    )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer timed reps (5)")
  parser.add_argument("--reps", type=int, default=None, help="timed reps per benchmark")
  args = parser.parse_args()
  reps = args.reps or (5 if args.quick else 20)

  print(header(), flush=True)
  ceiling = bench_matmul(reps)
  rows = [ceiling]
  rows += [bench_attention(kind, heads, reps) for kind in ("linear", "softmax") for heads in (1, 2)]
  rows.append(bench_sampler(Config().fig2, reps))
  rows += train_step_rows(reps)
  print(table(rows, ceiling.flops / ceiling.ms / 1e6))
  print(
    f"\nms/call: median of {reps} timed reps after 2 warm-up calls (best ms: the fastest); "
    "rates use the median. FLOPs are analytic matmul counts (fwd+bwd ≈ 3× forward). "
    "Timings vary about ±10% run to run, much more when the load average exceeds the "
    "core count."
  )


if __name__ == "__main__":
  main()

"""Peak memory of one training step, BPTT vs the online rule, against an inference pass.

Run: uv run python benchmarks/online_lru_memory.py [--lengths 1024,4096,16384] [--layers 4]

Every function is compiled (not run) for each sequence length T and XLA's own buffer
assignment is read with `jax.jit(f).lower(...).compile().memory_analysis()`: peak ≈
arguments + outputs + temporaries (bytes XLA allocates for the call; aliasing ignored, so this
is an upper bound of the same kind for every row). It is the compiled program's memory, not a
process RSS, so it does not depend on the machine's load. Rows:

  inference (parallel)   forward of the whole sequence at once (the scans' parallel form)
  inference (streaming)  forward as a recurrent net runs online: lax.scan over t, state only
  BPTT                   value_and_grad of the sequence loss (backward through time)
  online, stop-gradient  value_and_grad of the stop-gradient formulation (what training uses)
  online, streaming      the paper's algorithm: traces carried forward, no backward in time

The model is the LRA one (pool_st readout, a loss at every step), L layers, d_model H,
N units, batch B, float32 / complex64.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.lru import GradientRule
from innerloop_online_lru import model as M


def _bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def measure(steps: int, layers: int, d_model: int, d_hidden: int, batch: int) -> dict[str, int]:
  net = M.Network(
    d_model, 10, d_model=d_model, d_hidden=d_hidden, num_layers=layers, key=jax.random.key(0)
  )
  graphdef, params = nnx.split(net)
  x = jax.ShapeDtypeStruct((batch, steps, d_model), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  lengths = jnp.full((batch,), steps, jnp.int32)

  def loss(p, x, y, rule):
    logits = nnx.merge(graphdef, p)(x, rule=rule, readout=M.Readout.POOL_ST)
    return M.class_loss(logits, y, lengths)

  def inference(p, x):
    return nnx.merge(graphdef, p)(x, readout=M.Readout.POOL_ST)[:, -1]

  def inference_stream(p, x):
    return M.stream_forward(nnx.merge(graphdef, p), x, readout=M.Readout.POOL_ST)

  def train_grad(rule):
    return lambda p, x, y: jax.value_and_grad(loss)(p, x, y, rule)

  def online_stream(p, x, y):
    weights = M.class_weights(lengths, steps)
    step_loss = lambda logits_t, t: M.class_step_loss(logits_t, y, weights[t])
    return M.stream_grads(nnx.merge(graphdef, p), x, step_loss, readout=M.Readout.POOL_ST)

  fns = {
    "inference (parallel)": (inference, (params, x)),
    "inference (streaming)": (inference_stream, (params, x)),
    "BPTT": (train_grad(GradientRule.BPTT), (params, x, labels)),
    "online, stop-gradient": (train_grad(GradientRule.ONLINE), (params, x, labels)),
    "online, streaming": (online_stream, (params, x, labels)),
  }
  return {name: _bytes(jax.jit(f).lower(*args).compile()) for name, (f, args) in fns.items()}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--lengths", default="1024,4096,16384")
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--d-model", type=int, default=64)
  p.add_argument("--d-hidden", type=int, default=64)
  p.add_argument("--batch", type=int, default=8)
  a = p.parse_args()
  lengths = [int(t) for t in a.lengths.split(",")]
  print(
    f"# jax {jax.__version__} on {jax.devices()[0].platform}; L={a.layers} H={a.d_model} "
    f"N={a.d_hidden} B={a.batch}; load average {os.getloadavg()[0]:.1f}",
    file=sys.stderr,
  )
  rows = {t: measure(t, a.layers, a.d_model, a.d_hidden, a.batch) for t in lengths}
  names = list(rows[lengths[0]])
  par, stream = "inference (parallel)", "inference (streaming)"
  head = " | ".join(f"T={t}" for t in lengths)
  print(f"| compiled peak MiB (× parallel inference, × streaming inference) | {head} |")
  print("|---|" + "---:|" * len(lengths))
  for name in names:
    cells = [
      f"{rows[t][name] / 2**20:.1f} (×{rows[t][name] / rows[t][par]:.2f}, "
      f"×{rows[t][name] / rows[t][stream]:.2f})"
      for t in lengths
    ]
    print(f"| {name} | " + " | ".join(cells) + " |")
  growth = {n: rows[lengths[-1]][n] / rows[lengths[0]][n] for n in names}
  print(
    f"\ngrowth from T={lengths[0]} to T={lengths[-1]}: "
    + ", ".join(f"{n} ×{g:.2f}" for n, g in growth.items())
  )


if __name__ == "__main__":
  main()

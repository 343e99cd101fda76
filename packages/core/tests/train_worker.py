"""A small real training run used by the resume tests (run as a subprocess).

Usage: python train_worker.py RUN_DIR OUT_JSON [NUM_STEPS] [FINGERPRINT]
Linear regression with a 2-layer MLP, 3 seeds vmapped, checkpoints every 10 steps.
"""

import sys

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core import optim, runlog
from innerloop_core.train import EXIT_BUDGET, BudgetExhausted, Deadline, LoopConfig, train


class TinyMLP(nnx.Module):
  def __init__(self, key):
    k1, k2 = jax.random.split(key)
    self.w1 = nnx.Param(jax.random.normal(k1, (8, 32)) * 0.3)
    self.w2 = nnx.Param(jax.random.normal(k2, (32, 1)) * 0.3)

  def __call__(self, x):
    return jnp.tanh(x @ self.w1[...]) @ self.w2[...]


def sample_batch(key):
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (256, 8))
  return x, jnp.sin(x.sum(-1, keepdims=True))


def loss(model, batch):
  x, y = batch
  return 0.5 * jnp.mean((model(x) - y) ** 2)


def evaluate(model):
  return {"val_loss": loss(model, sample_batch(jax.random.key(99)))}


def main():
  run_dir, out = sys.argv[1], sys.argv[2]
  steps = int(sys.argv[3]) if len(sys.argv) > 3 else 400
  fingerprint = sys.argv[4] if len(sys.argv) > 4 else "tiny-mlp-v1"
  tx = optim.make_optimizer(optim.OptimConfig(learning_rate=3e-3, clip_global_norm=1.0), steps)
  try:
    result = train(
      name="tiny-mlp",
      init=TinyMLP,
      sample_batch=sample_batch,
      loss=loss,
      optimizer=tx,
      loop=LoopConfig(steps, eval_every=20, checkpoint_every=10, log_every_s=0.0),
      seeds=(0, 1, 2),
      run_dir=run_dir,
      fingerprint=fingerprint,
      evaluate=evaluate,
      deadline=Deadline.from_env(),
    )
  except BudgetExhausted as e:
    print(e, file=sys.stderr)
    return EXIT_BUDGET
  runlog.write_json(out, {"history": result.history, "params": jax.tree.leaves(result.params)})
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

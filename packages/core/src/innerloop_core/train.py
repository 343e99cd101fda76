"""The one training loop: a jitted step over split NNX state, seeds vmapped, resumable.

Shape notation: S seeds trained side by side (vmapped) in one process; every leaf of the
training state carries a leading S axis.

A paper supplies four pure pieces and the loop does the rest:
  init(key) -> nnx.Module                      fresh model (all state must be nnx.Param)
  sample_batch(key) -> batch                   a fresh batch of tasks from a key
  loss(model, batch) -> scalar                 the training objective
  evaluate(model) -> {name: scalar}            validation metrics (optional)
and optionally a fifth, to replace autodiff of the loss by another gradient estimator:
  value_and_grad(graphdef, params, batch) -> (loss, grads)   grads: an nnx.State like params
(e.g. a learning rule that computes its gradient forward in time). It is traced inside the
jitted step, so the estimator is fixed per call of `train` (a static choice, never a global).
A fixed data set (arrays sample_batch indexes into) goes in `data`: it is then an argument of
the jitted step and evaluation rather than a constant baked into them, and the pieces are
called as sample_batch(key, data) and evaluate(model, data).

Randomness comes only from explicit keys: seed s initialises from
`fold_in(key(s), 0)` and its step-t batch from `fold_in(fold_in(key(s), 1), t)`, so a
resumed run draws exactly the batches an uninterrupted run would have drawn and ends with
the same numbers on CPU.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from innerloop_core import runlog
from innerloop_core.checkpoint import Checkpointer

# Exit code of a run that stopped because its wall-clock budget ended (EX_TEMPFAIL): the
# checkpoint is saved, the stage is unfinished, and rerunning the same command resumes.
EXIT_BUDGET = 75


class BudgetExhausted(Exception):
  """Raised after saving a checkpoint when the wall-clock budget has run out."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  num_steps: int
  eval_every: int
  checkpoint_every: int
  log_every_s: float = 10.0


@dataclasses.dataclass
class TrainResult:
  graphdef: Any
  params: Any  # nnx.State with a leading seed axis S
  history: list[dict[str, Any]]  # one row per evaluation: step, train_loss[S], metrics[S]
  seeds: tuple[int, ...]
  wall_time_s: float

  def model(self, seed_index: int) -> nnx.Module:
    """The trained model of one seed."""
    one = jax.tree.map(lambda x: x[seed_index], self.params)
    return nnx.merge(self.graphdef, one)

  def final(self, name: str) -> list[float]:
    """The last logged value of metric `name`, one per seed."""
    return [float(v) for v in self.history[-1][name]]


class Deadline:
  """A wall-clock budget shared by every run of one command (None = unlimited)."""

  def __init__(self, seconds: float | None):
    self.seconds = seconds
    self._t0 = time.monotonic()

  def expired(self) -> bool:
    return self.seconds is not None and time.monotonic() - self._t0 > self.seconds

  @classmethod
  def from_env(cls, seconds: float | None = None) -> "Deadline":
    """`INNERLOOP_TIME_BUDGET_S` in the environment sets the budget when not given."""
    if seconds is None and os.environ.get("INNERLOOP_TIME_BUDGET_S"):
      seconds = float(os.environ["INNERLOOP_TIME_BUDGET_S"])
    return cls(seconds)


def seed_keys(seeds: Sequence[int], stream: int) -> jax.Array:
  """Per-seed keys of one random stream (0: init, 1: data, 2+: free for the caller)."""
  return jnp.stack([jax.random.fold_in(jax.random.key(s), stream) for s in seeds])


def train(
  *,
  name: str,
  init: Callable[[jax.Array], nnx.Module],
  sample_batch: Callable[[jax.Array], Any],
  loss: Callable[[nnx.Module, Any], jax.Array],
  optimizer: optax.GradientTransformation,
  loop: LoopConfig,
  seeds: Sequence[int],
  run_dir: str | pathlib.Path,
  fingerprint: str,
  evaluate: Callable[[nnx.Module], Mapping[str, jax.Array]] | None = None,
  deadline: Deadline | None = None,
  value_and_grad: Callable[[Any, Any, Any], tuple[jax.Array, Any]] | None = None,
  data: Any = None,
) -> TrainResult:
  """Trains len(seeds) models side by side; resumes from `run_dir` if it holds a checkpoint.

  Writes `run_dir/metrics.jsonl` (one row per evaluation) and checkpoints under
  `run_dir/checkpoints`. Raises `BudgetExhausted` (after saving) when `deadline` expires.
  """
  if loop.num_steps < 0 or loop.eval_every <= 0 or loop.checkpoint_every <= 0:
    raise ValueError(
      f"{name}: num_steps must be >= 0 and eval_every, checkpoint_every > 0, got {loop}"
    )
  seeds = tuple(int(s) for s in seeds)
  if not seeds:
    raise ValueError(f"{name}: seeds must not be empty")
  run_dir = pathlib.Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  deadline = deadline or Deadline(None)
  t_start = time.perf_counter()

  graphdef, _ = nnx.split(nnx.eval_shape(lambda: init(jax.random.key(0))))
  params = jax.vmap(lambda k: nnx.state(init(k)))(seed_keys(seeds, 0))
  opt_state = jax.vmap(optimizer.init)(params)
  data_keys = seed_keys(seeds, 1)

  def step_one(params, opt_state, data_key, step, data):
    batch_key = jax.random.fold_in(data_key, step)
    batch = sample_batch(batch_key) if data is None else sample_batch(batch_key, data)
    if value_and_grad is None:
      value, grads = jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p), batch))(params)
    else:
      value, grads = value_and_grad(graphdef, params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  train_step = jax.jit(jax.vmap(step_one, in_axes=(0, 0, 0, None, None)), donate_argnums=(0, 1))

  def eval_one(params, data):
    if evaluate is None:
      return {}
    model = nnx.merge(graphdef, params)
    return dict(evaluate(model) if data is None else evaluate(model, data))

  eval_step = jax.jit(jax.vmap(eval_one, in_axes=(0, None)))

  ckpt = Checkpointer(run_dir / "checkpoints", fingerprint)
  history: list[dict[str, Any]] = []
  start = 0
  restored = ckpt.restore_latest((params, opt_state))
  if restored is not None:
    params, opt_state = restored.tree
    start = restored.step
    history = restored.record["history"]
    wall_before = float(restored.record.get("wall_time_s", 0.0))
  else:
    wall_before = 0.0
  metrics_path = run_dir / "metrics.jsonl"
  runlog.write_jsonl(metrics_path, history)

  def log_row(step: int, train_loss: np.ndarray | None) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step}
    if train_loss is not None:
      row["train_loss"] = [float(v) for v in train_loss]
    for k, v in eval_step(params, data).items():
      row[k] = [float(x) for x in np.asarray(v)]
    history.append(row)
    runlog.append_jsonl(metrics_path, row)
    return row

  def save(step: int) -> None:
    ckpt.save(
      step,
      (params, opt_state),
      {"history": history, "wall_time_s": wall_before + time.perf_counter() - t_start},
    )

  if start == 0 and not history:
    log_row(0, None)
  progress = runlog.Progress(name, loop.num_steps, start, loop.log_every_s)
  step = start
  try:
    while step < loop.num_steps:
      params, opt_state, value = train_step(params, opt_state, data_keys, step, data)
      step += 1
      if step % loop.eval_every == 0 or step == loop.num_steps:
        row = log_row(step, np.asarray(value))
        progress.update(step, {"loss": float(np.mean(row["train_loss"]))})
      else:
        progress.update(step)
      if step % loop.checkpoint_every == 0 or step == loop.num_steps:
        save(step)
      elif deadline.expired():
        save(step)
        raise BudgetExhausted(
          f"{name}: time budget ended at step {step}/{loop.num_steps}; "
          f"rerun the same command to resume"
        )
  finally:
    progress.close()
  if ckpt.latest_step() is None:  # num_steps == 0: keep the initial state as the result
    save(0)
  trained_now = time.perf_counter() - t_start if step > start else 0.0
  wall = wall_before + trained_now
  return TrainResult(
    graphdef=graphdef, params=params, history=history, seeds=seeds, wall_time_s=wall
  )

"""The training loop: resume after a real kill, budgets, refused checkpoints."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.checkpoint import Checkpointer, CheckpointError
from innerloop_core.train import EXIT_BUDGET

WORKER = pathlib.Path(__file__).with_name("train_worker.py")
STEPS = 120


def _run(run_dir, out, *extra, env=None, **kw):
  return subprocess.run(
    [sys.executable, str(WORKER), str(run_dir), str(out), str(STEPS), *extra],
    env={**os.environ, "INNERLOOP_PLAIN_LOGS": "1", **(env or {})},
    capture_output=True,
    text=True,
    timeout=300,
    **kw,
  )


def _committed_steps(ckpt_dir):
  """Steps of committed checkpoints (orbax writes to a temporary name, then renames)."""
  if not ckpt_dir.exists():
    return []
  return [int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  d = tmp_path_factory.mktemp("straight")
  r = _run(d / "run", d / "out.json")
  assert r.returncode == 0, r.stderr
  return (d / "out.json").read_bytes()


@pytest.mark.slow
def test_killed_run_resumes_to_identical_metrics(tmp_path, uninterrupted):
  run_dir, out = tmp_path / "run", tmp_path / "out.json"
  proc = subprocess.Popen(
    [sys.executable, str(WORKER), str(run_dir), str(out), str(STEPS)],
    env={**os.environ, "INNERLOOP_PLAIN_LOGS": "1"},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  ckpt_dir = run_dir / "checkpoints"
  deadline = time.monotonic() + 120
  # Kill with SIGKILL (no cleanup) once a mid-run checkpoint exists.
  while time.monotonic() < deadline:
    steps = _committed_steps(ckpt_dir)
    if steps and max(steps) >= 40:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not out.exists(), "the run finished before it could be killed"
  killed_at = max(_committed_steps(ckpt_dir))
  assert 0 < killed_at < STEPS
  r = _run(run_dir, out)
  assert r.returncode == 0, r.stderr
  assert out.read_bytes() == uninterrupted


@pytest.mark.slow
def test_budget_exit_code_then_resume(tmp_path, uninterrupted):
  run_dir, out = tmp_path / "run", tmp_path / "out.json"
  r = _run(run_dir, out, env={"INNERLOOP_TIME_BUDGET_S": "0"})
  assert r.returncode == EXIT_BUDGET, r.stderr
  assert "time budget ended" in r.stderr
  assert not out.exists()
  r = _run(run_dir, out)
  assert r.returncode == 0, r.stderr
  assert out.read_bytes() == uninterrupted


def _tree():
  return {"a": jnp.arange(6.0).reshape(2, 3), "b": [jnp.ones(4, jnp.int32)]}


def test_checkpoint_roundtrip(tmp_path):
  c = Checkpointer(tmp_path, "fp-1")
  c.save(3, _tree(), {"history": [{"step": 3, "x": [0.5]}]})
  r = c.restore_latest(jax.tree.map(jnp.zeros_like, _tree()))
  assert r.step == 3 and r.record["history"] == [{"step": 3, "x": [0.5]}]
  for a, b in zip(jax.tree.leaves(r.tree), jax.tree.leaves(_tree())):
    np.testing.assert_array_equal(a, b)


def test_checkpoint_of_other_config_is_refused(tmp_path):
  Checkpointer(tmp_path, "fp-1").save(3, _tree(), {})
  with pytest.raises(CheckpointError, match="another config"):
    Checkpointer(tmp_path, "fp-2").restore_latest(_tree())


def test_checkpoint_with_other_structure_is_refused(tmp_path):
  Checkpointer(tmp_path, "fp-1").save(3, _tree(), {})
  with pytest.raises(CheckpointError, match="arrays"):
    Checkpointer(tmp_path, "fp-1").restore_latest({"a": jnp.zeros((2, 3))})


def test_corrupt_checkpoint_is_detected(tmp_path):
  big = {"a": jnp.arange(4096.0)}
  Checkpointer(tmp_path, "fp-1").save(1, big, {})
  data = [
    p for p in (tmp_path / "1" / "state").rglob("*") if p.is_file() and p.stat().st_size > 1000
  ]
  assert data, "no data file found to corrupt"
  for p in data:
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes((b ^ 0xFF) for b in raw[mid : mid + 64])
    p.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError, match="corrupt|unreadable"):
    Checkpointer(tmp_path, "fp-1").restore_latest(big)


def test_custom_gradient_estimator_replaces_autodiff(tmp_path):
  """`value_and_grad` swaps the gradient: autodiff written out by hand gives the default
  run's parameters exactly; a scaled estimator gives different ones."""
  from flax import nnx

  from innerloop_core import optim
  from innerloop_core.train import LoopConfig, train

  class Line(nnx.Module):
    def __init__(self, key):
      self.w = nnx.Param(jax.random.normal(key, (3,)))

  def sample_batch(key):
    x = jax.random.normal(key, (8, 3))
    return x, x @ jnp.array([1.0, -2.0, 0.5])

  def loss(model, batch):
    x, y = batch
    return jnp.mean((x @ model.w[...] - y) ** 2)

  def run(name, estimator):
    return train(
      name=name,
      init=Line,
      sample_batch=sample_batch,
      loss=loss,
      # SGD: Adam would normalise a scaled gradient away
      optimizer=optim.make_optimizer(optim.OptimConfig(optim.OptimizerName.SGD, 0.05), 20),
      loop=LoopConfig(num_steps=20, eval_every=10, checkpoint_every=20),
      seeds=(0, 1),
      run_dir=tmp_path / name,
      fingerprint=name,
      value_and_grad=estimator,
    )

  def by_hand(graphdef, params, batch):
    return jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p), batch))(params)

  def halved(graphdef, params, batch):
    value, grads = by_hand(graphdef, params, batch)
    return value, jax.tree.map(lambda g: 0.5 * g, grads)

  default = np.asarray(run("default", None).params["w"][...])
  np.testing.assert_array_equal(np.asarray(run("by_hand", by_hand).params["w"][...]), default)
  other = np.asarray(run("halved", halved).params["w"][...])
  assert np.abs(other - default).max() > 1e-4


def test_data_argument_equals_closed_over_data(tmp_path):
  """A data set passed as `data` (a jit argument) trains exactly like the same arrays closed
  over as constants, and evaluate receives it too."""
  from flax import nnx

  from innerloop_core import optim
  from innerloop_core.train import LoopConfig, train

  xs = jax.random.normal(jax.random.key(0), (64, 3))
  ys = xs @ jnp.array([1.0, -2.0, 0.5])

  class Line(nnx.Module):
    def __init__(self, key):
      self.w = nnx.Param(jax.random.normal(key, (3,)))

  def loss(model, batch):
    x, y = batch
    return jnp.mean((x @ model.w[...] - y) ** 2)

  def pick(key, data):
    idx = jax.random.randint(key, (8,), 0, 64)
    return data[0][idx], data[1][idx]

  def run(name, **kw):
    return train(
      name=name,
      init=Line,
      loss=loss,
      optimizer=optim.make_optimizer(optim.OptimConfig(learning_rate=0.05), 30),
      loop=LoopConfig(num_steps=30, eval_every=15, checkpoint_every=30),
      seeds=(0,),
      run_dir=tmp_path / name,
      fingerprint=name,
      **kw,
    )

  as_arg = run(
    "arg",
    sample_batch=pick,
    data=(xs, ys),
    evaluate=lambda m, data: {"mse": loss(m, data)},
  )
  closed = run(
    "closed",
    sample_batch=lambda key: pick(key, (xs, ys)),
    evaluate=lambda m: {"mse": loss(m, (xs, ys))},
  )
  np.testing.assert_allclose(as_arg.final("mse"), closed.final("mse"), rtol=1e-6)
  assert as_arg.final("mse")[0] < as_arg.history[0]["mse"][0] / 2


def test_cached_json_computes_once_per_key(tmp_path):
  from innerloop_core.runlog import cached_json

  calls = []

  def compute():
    calls.append(1)
    return {"alpha": np.float32(0.1) * np.arange(3, dtype=np.float32)}

  path = tmp_path / "fit.json"
  first = cached_json(path, {"config": "abc", "depth": 2}, compute)
  again = cached_json(path, {"config": "abc", "depth": 2}, compute)
  assert len(calls) == 1 and again == first
  # float32 values survive the JSON round trip exactly.
  assert np.array_equal(np.asarray(again["alpha"], np.float32), compute()["alpha"])
  calls.clear()
  cached_json(path, {"config": "other", "depth": 2}, compute)
  assert len(calls) == 1  # another key recomputes

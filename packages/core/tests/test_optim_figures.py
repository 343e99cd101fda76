"""Optimizer chains (both clippings) and deterministic figure files."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from innerloop_core import figures
from innerloop_core.optim import (
  OptimConfig,
  OptimizerName,
  Schedule,
  learning_rate_schedule,
  make_optimizer,
)


def _first_update(cfg, grads):
  tx = make_optimizer(cfg, num_steps=10)
  params = {"w": jnp.zeros_like(grads["w"])}
  updates, _ = tx.update(grads, tx.init(params), params)
  return np.asarray(updates["w"])


def test_elementwise_clip_bounds_each_gradient_entry():
  grads = {"w": jnp.asarray([100.0, -0.5, 0.001])}
  got = _first_update(
    OptimConfig(name=OptimizerName.SGD, learning_rate=1.0, clip_elementwise=1.0), grads
  )
  np.testing.assert_allclose(got, [-1.0, 0.5, -0.001], rtol=1e-6)


def test_global_norm_clip_rescales_the_whole_gradient():
  grads = {"w": jnp.asarray([3.0, 4.0])}
  got = _first_update(
    OptimConfig(name=OptimizerName.SGD, learning_rate=1.0, clip_global_norm=1.0), grads
  )
  np.testing.assert_allclose(got, [-0.6, -0.8], rtol=1e-6)


def test_elementwise_then_global_norm():
  grads = {"w": jnp.asarray([30.0, 40.0])}
  got = _first_update(
    OptimConfig(
      name=OptimizerName.SGD, learning_rate=1.0, clip_elementwise=3.0, clip_global_norm=3.0
    ),
    grads,
  )
  # element-wise first: (3, 3), norm 4.24 -> rescaled to norm 3
  np.testing.assert_allclose(got, -np.asarray([3.0, 3.0]) * 3.0 / np.sqrt(18.0), rtol=1e-6)


def test_adam_matches_optax_and_schedules_decay():
  grads = {"w": jnp.asarray([0.3, -2.0])}
  ours = _first_update(OptimConfig(learning_rate=0.1), grads)
  ref_tx = optax.adam(0.1)
  ref, _ = ref_tx.update(grads, ref_tx.init({"w": jnp.zeros(2)}), {"w": jnp.zeros(2)})
  np.testing.assert_allclose(ours, np.asarray(ref["w"]), rtol=1e-6)
  from innerloop_core.optim import learning_rate_schedule

  sched = learning_rate_schedule(OptimConfig(learning_rate=1.0, schedule=Schedule.COSINE), 100)
  assert float(sched(0)) == 1.0 and float(sched(100)) < 1e-6
  floor = OptimConfig(learning_rate=1.0, schedule=Schedule.COSINE, final_lr_fraction=0.1)
  sched = learning_rate_schedule(floor, 100)
  np.testing.assert_allclose(
    [float(sched(0)), float(sched(50)), float(sched(100))], [1, 0.55, 0.1], rtol=1e-5
  )


def _figure(path, data):
  fig, ax = figures.subplots(1, 1)
  figures.plot_seeds(ax[0, 0], [0, 1, 2], data, "trained", figures.COLORS["trained"])
  figures.plot_published(ax[0, 0], None, 0.5)
  return figures.savefig(fig, path, note="test note")


def test_savefig_is_deterministic(tmp_path):
  data = np.asarray([[1.0, 0.6, 0.5], [1.1, 0.7, 0.5]])
  a = _figure(tmp_path / "a.png", data).read_bytes()
  b = _figure(tmp_path / "b.png", data).read_bytes()
  c = _figure(tmp_path / "c.png", data * 2).read_bytes()
  assert a == b and a != c
  assert a[:8] == b"\x89PNG\r\n\x1a\n" and b"matplotlib" not in a.lower()


@pytest.mark.parametrize("schedule", [Schedule.COSINE, Schedule.WARMUP_COSINE])
def test_cosine_schedules_end_at_the_final_fraction(schedule):
  cfg = OptimConfig(learning_rate=4e-4, schedule=schedule, warmup_steps=10, final_lr_fraction=0.025)
  lr = learning_rate_schedule(cfg, 100)
  assert float(lr(100)) == pytest.approx(1e-5, rel=1e-6)
  peak = 10 if schedule is Schedule.WARMUP_COSINE else 0
  assert float(lr(peak)) == pytest.approx(4e-4, rel=1e-6)
  default = learning_rate_schedule(dataclasses.replace(cfg, final_lr_fraction=0.0), 100)
  assert float(default(100)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", [OptimizerName.ADAMW, OptimizerName.SGD])
def test_decay_exclude_leaves_the_named_parameters_undecayed(name):
  # Zero gradients: every change is weight decay. "nu" (also nested) must not move.
  params = {"nu": jnp.ones(2), "w": jnp.ones(2), "block": {"nu": jnp.ones(3)}}
  cfg = OptimConfig(name=name, learning_rate=0.1, weight_decay=0.5, decay_exclude=("nu",))
  tx = make_optimizer(cfg, num_steps=10)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_array_equal(np.asarray(updates["nu"]), 0.0)
  np.testing.assert_array_equal(np.asarray(updates["block"]["nu"]), 0.0)
  np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * 0.5, rtol=1e-6)


def test_decay_exclude_without_weight_decay_is_a_config_error():
  from innerloop_core.config import ConfigError

  with pytest.raises(ConfigError, match="decay_exclude"):
    make_optimizer(OptimConfig(decay_exclude=("nu",)), num_steps=10)

"""Tests for innerloop_core.fixed_point: both solvers, the stop metric, implicit gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.config import ConfigError
from innerloop_core.fixed_point import (
  Solver,
  SolverConfig,
  fixed_point,
  relative_residual,
  solve,
  unrolled,
)
from innerloop_core.testing import relative_error

B, N, D = 4, 12, 5


def _params(seed: int, gain: float = 0.9):
  """A contractive tanh RNN map: ‖W‖₂ = gain < 1 and |tanh'| <= 1."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(N, N))
  w = gain * w / np.linalg.norm(w, 2)
  return {
    "w": jnp.asarray(w, jnp.float32),
    "u": jnp.asarray(rng.normal(size=(D, N)) / np.sqrt(D), jnp.float32),
    "b": jnp.asarray(0.1 * rng.normal(size=(N,)), jnp.float32),
  }


def _inputs(seed: int):
  return jnp.asarray(np.random.default_rng(seed + 100).normal(size=(B, D)), jnp.float32)


def rnn_map(params, v, x):
  return x @ params["u"] + jnp.tanh(v) @ params["w"].T + params["b"]


@pytest.mark.parametrize("solver", list(Solver))
def test_solvers_reach_the_fixed_point(solver):
  params, x = _params(0), _inputs(0)
  cfg = SolverConfig(solver=solver, tol=1e-7, max_iter=500)
  sol = solve(lambda v: rnn_map(params, v, x), jnp.zeros((B, N)), cfg)
  assert int(sol.iterations) < 500
  assert float(sol.residual) < 1e-7
  gap = jnp.linalg.norm(rnn_map(params, sol.value, x) - sol.value, axis=-1)
  assert float(jnp.max(gap)) < 1e-5


def test_picard_and_anderson_agree_and_anderson_is_faster():
  params, x = _params(1, gain=0.97), _inputs(1)
  f = lambda v: rnn_map(params, v, x)
  pic = solve(f, jnp.zeros((B, N)), SolverConfig(Solver.PICARD, tol=1e-7, max_iter=2000))
  anders = solve(f, jnp.zeros((B, N)), SolverConfig(Solver.ANDERSON, tol=1e-7, max_iter=2000))
  assert float(jnp.max(jnp.abs(pic.value - anders.value))) <= 1e-5
  assert int(anders.iterations) < int(pic.iterations)


def test_stop_metric_matches_its_definition():
  """The reported residual is max_b ‖v_K − v_{K−1}‖ / (1e-5 + ‖v_{K−1}‖) for plain Picard."""
  params, x = _params(2), _inputs(2)
  f = lambda v: rnn_map(params, v, x)
  k = 7
  last = solve(f, jnp.zeros((B, N)), SolverConfig(tol=0.0, max_iter=k))
  before = solve(f, jnp.zeros((B, N)), SolverConfig(tol=0.0, max_iter=k - 1))
  assert int(last.iterations) == k
  want = np.max(
    np.linalg.norm(np.asarray(last.value - before.value), axis=1)
    / (1e-5 + np.linalg.norm(np.asarray(before.value), axis=1))
  )
  np.testing.assert_allclose(float(last.residual), want, rtol=1e-5)
  np.testing.assert_allclose(float(relative_residual(last.value, before.value, 1e-5)), want, 1e-6)


def test_stops_at_the_first_iterate_below_tol():
  params, x = _params(3), _inputs(3)
  f = lambda v: rnn_map(params, v, x)
  sol = solve(f, jnp.zeros((B, N)), SolverConfig(tol=1e-4, max_iter=500))
  earlier = solve(f, jnp.zeros((B, N)), SolverConfig(tol=0.0, max_iter=int(sol.iterations) - 1))
  assert float(sol.residual) < 1e-4 <= float(earlier.residual)


def test_damped_picard_and_pytree_states():
  """A dict state (two leaves) with damping 0.5 reaches the same point as the flat solve."""
  params, x = _params(4), _inputs(4)

  def f_tree(s):
    v = jnp.concatenate([s["a"], s["b"]], axis=1)
    out = rnn_map(params, v, x)
    return {"a": out[:, :5], "b": out[:, 5:]}

  cfg = SolverConfig(tol=1e-7, max_iter=3000, damping=0.5)
  tree = solve(f_tree, {"a": jnp.zeros((B, 5)), "b": jnp.zeros((B, N - 5))}, cfg)
  flat = solve(lambda v: rnn_map(params, v, x), jnp.zeros((B, N)), SolverConfig(tol=1e-7))
  got = jnp.concatenate([tree.value["a"], tree.value["b"]], axis=1)
  assert float(jnp.max(jnp.abs(got - flat.value))) < 1e-5


@pytest.mark.parametrize("solver", list(Solver))
def test_implicit_gradient_equals_bptt_through_200_steps(solver):
  """Recurrent backprop == autodiff through 200 unrolled Picard steps (rel <= 1e-4)."""
  params, x = _params(5, gain=0.8), _inputs(5)
  target = jnp.asarray(np.random.default_rng(7).normal(size=(B, N)), jnp.float32)
  cfg = SolverConfig(solver=solver, tol=1e-7, max_iter=1000)

  def loss_implicit(p):
    v = fixed_point(rnn_map_x, (p, x), jnp.zeros((B, N)), cfg).value
    return jnp.sum((jnp.tanh(v) - target) ** 2)

  def loss_unrolled(p):
    v = unrolled(lambda v: rnn_map(p, v, x), jnp.zeros((B, N)), 200)
    return jnp.sum((jnp.tanh(v) - target) ** 2)

  got = jax.jit(jax.grad(loss_implicit))(params)
  want = jax.jit(jax.grad(loss_unrolled))(params)
  for name in params:
    assert relative_error(got[name], want[name]) <= 1e-4, name


def rnn_map_x(px, v):
  params, x = px
  return rnn_map(params, v, x)


def test_fixed_point_has_no_gradient_through_the_start():
  params, x = _params(6), _inputs(6)
  cfg = SolverConfig(tol=1e-7)
  grad_x0 = jax.grad(
    lambda v0: jnp.sum(fixed_point(rnn_map_x, (params, x), v0, cfg).value), argnums=0
  )(jnp.ones((B, N)))
  assert float(jnp.max(jnp.abs(grad_x0))) == 0.0


def test_bad_config_is_one_line():
  with pytest.raises(ConfigError, match="solver must be one of 'picard', 'anderson'"):
    SolverConfig(solver="newton")
  with pytest.raises(ConfigError, match="damping"):
    SolverConfig(damping=0.0)
  assert SolverConfig(solver="anderson").solver is Solver.ANDERSON


def test_per_leaf_residual_waits_for_the_small_leaf():
  """A tiny, slowly converging leaf next to a large fast one: the whole-state metric stops
  early, the per-leaf one only when the small leaf has converged too."""

  def f(s):
    return {"big": 0.1 * s["big"] + 100.0, "small": 0.9 * s["small"] + 1e-3}

  x0 = {"big": jnp.zeros((B, 3)), "small": jnp.zeros((B, 2))}
  whole = solve(f, x0, SolverConfig(tol=1e-6, max_iter=1000))
  leaf = solve(f, x0, SolverConfig(tol=1e-6, max_iter=1000, per_leaf=True))
  assert int(whole.iterations) < int(leaf.iterations) < 1000
  np.testing.assert_allclose(np.asarray(leaf.value["small"]), 1e-2, rtol=1e-4)
  assert abs(float(whole.value["small"][0, 0]) - 1e-2) > 1e-3

"""The conv-ff model of Table 2: shapes, BP = RBP (5-step convergence), KP = DI with exact
feedback, and one LCP-DI training step, on a few random CIFAR-shaped images."""

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.fixed_point import SolverConfig
from innerloop_core.testing import relative_error
from innerloop_least_control import conv
from innerloop_least_control import methods as M
from innerloop_least_control.model import (
  Arch,
  ModelConfig,
  forward_params,
  free_equilibrium,
  init_params,
  unrolled_forward,
)

CFG = ModelConfig(arch=Arch.CONV_FF, input_dim=3072, hidden=0, num_classes=10)


def _batch(n=2):
  x = jax.random.normal(jax.random.key(0), (n, 3072))
  y = jnp.arange(n) % 10
  return x, y


def test_state_size_and_convergence_in_five_steps():
  assert conv.STATE_SIZE == 34272 == CFG.state_size
  p = init_params(CFG, jax.random.key(1))
  x, _ = _batch()
  sol = free_equilibrium(p, x, CFG, SolverConfig(tol=1e-6, max_iter=20))
  assert int(sol.iterations) <= 7  # 5 blocks settle, one more step confirms
  np.testing.assert_allclose(sol.value, unrolled_forward(p, x, CFG), rtol=1e-5, atol=1e-5)


def test_bp_equals_rbp_on_conv_ff():
  p = init_params(CFG, jax.random.key(2))
  x, y = _batch()
  tight = M.GradConfig(
    forward=SolverConfig(tol=1e-7, max_iter=20), backward=SolverConfig(tol=1e-7, max_iter=20)
  )
  rbp = M.rbp_gradient(p, x, y, CFG, tight)
  bp = jax.grad(
    lambda q: M.training_loss(q, x, y, None, CFG, M.Method.BP, M.ControlConfig(), tight)
  )(forward_params(p))
  for name in rbp:
    assert relative_error(rbp[name], bp[name]) <= 1e-5, name


def test_kp_with_exact_feedback_equals_di_on_conv_ff():
  cfg = ModelConfig(arch=Arch.CONV_FF, input_dim=3072, hidden=0, kp_feedback=True)
  p = init_params(cfg, jax.random.key(3))
  p = {**p, **{f"fb_{n}": p[n] for n in forward_params(p) if f"fb_{n}" in p}}
  x, y = _batch(1)
  # Equal feedback makes the two dynamics identical step by step: 25 steps suffice to test it.
  ctrl = M.ControlConfig(solver=SolverConfig(tol=0.0, max_iter=25))
  di = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_DI)
  kp = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_KP)
  for name in di:
    np.testing.assert_allclose(kp[name], di[name], rtol=1e-4, atol=1e-9)

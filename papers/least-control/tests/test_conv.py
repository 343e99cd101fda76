"""The conv-ff model of Table 2: shapes, BP = RBP (5-step convergence), KP = DI with exact
feedback, and one LCP-DI training step, on a few random CIFAR-shaped images."""

import functools

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


@functools.cache
def _params():
  """One initialisation shared by the tests (drawing the 4M weights costs seconds)."""
  return init_params(CFG, jax.random.key(1))


def _batch(n=2):
  x = jax.random.normal(jax.random.key(0), (n, 3072))
  y = jnp.arange(n) % 10
  return x, y


def test_state_size_and_convergence_in_five_steps():
  assert conv.STATE_SIZE == 34272 == CFG.state_size
  p = _params()
  x, _ = _batch()
  # One compiled program: eager dispatch of the 4M-weight blocks dominates otherwise.
  sol, explicit = jax.jit(
    lambda q: (
      free_equilibrium(q, x, CFG, SolverConfig(tol=1e-6, max_iter=20)),
      unrolled_forward(q, x, CFG),
    )
  )(p)
  assert int(sol.iterations) <= 7  # 5 blocks settle, one more step confirms
  np.testing.assert_allclose(sol.value, explicit, rtol=1e-5, atol=1e-5)


def test_bp_equals_rbp_on_conv_ff():
  p = _params()
  x, y = _batch()
  tight = M.GradConfig(
    forward=SolverConfig(tol=1e-7, max_iter=20), backward=SolverConfig(tol=1e-7, max_iter=20)
  )
  rbp = jax.jit(lambda q: M.rbp_gradient(q, x, y, CFG, tight))(p)
  bp = jax.jit(
    jax.grad(lambda q: M.training_loss(q, x, y, None, CFG, M.Method.BP, M.ControlConfig(), tight))
  )(forward_params(p))
  for name in rbp:
    assert relative_error(rbp[name], bp[name]) <= 1e-5, name


def test_kp_with_exact_feedback_equals_di_on_conv_ff():
  cfg = ModelConfig(arch=Arch.CONV_FF, input_dim=3072, hidden=0, kp_feedback=True)
  p = _params()
  fed_back = ("conv1", "conv2", "lin1", "lin2", "d")  # the weights KP keeps copies of
  assert set(fed_back) <= set(p)
  p = {**p, **{f"fb_{n}": p[n] for n in fed_back}}
  x, y = _batch(1)
  # Equal feedback makes the two dynamics identical step by step: 25 steps suffice to test it.
  ctrl = M.ControlConfig(solver=SolverConfig(tol=0.0, max_iter=25))
  di, kp = jax.jit(
    lambda q: [
      M.lcp_update(q, x, y, cfg, ctrl, M.GradConfig(), method)
      for method in (M.Method.LCP_DI, M.Method.LCP_KP)
    ]
  )(p)
  for name in di:
    np.testing.assert_allclose(kp[name], di[name], rtol=1e-4, atol=1e-9)

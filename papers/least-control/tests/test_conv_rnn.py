"""The conv-rnn model of Table 2 on 8×8 images: the norms against naive loops, RBP = BPTT,
LCP-DI aligned with the gradient at initialisation, batched evaluation, clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core import config as core_config
from innerloop_core.fixed_point import SolverConfig
from innerloop_core.testing import relative_error
from innerloop_least_control import conv_rnn
from innerloop_least_control import methods as M
from innerloop_least_control.config import PROFILES, Table
from innerloop_least_control.experiments import Row, free_logits_in_batches
from innerloop_least_control.model import (
  Arch,
  ModelConfig,
  decoder,
  forward_params,
  free_equilibrium,
  init_params,
)

CFG = ModelConfig(arch=Arch.CONV_RNN, input_dim=3 * 8 * 8, hidden=0)
TIGHT = M.GradConfig(
  forward=SolverConfig(tol=1e-7, max_iter=500),
  backward=SolverConfig(tol=1e-7, max_iter=500),
  bptt_steps=150,  # the free solve converges in 44 steps at this seed
)


@functools.cache
def _params():
  return init_params(CFG, jax.random.key(0))


def _batch(n=4):
  x = jax.random.normal(jax.random.key(1), (n, CFG.input_dim))
  return x, jnp.arange(n) % 10


def test_sizes_and_a_clear_error_for_other_images():
  assert CFG.state_size == 48 * 8 * 8
  assert ModelConfig(arch="conv-rnn", input_dim=3072, hidden=0).state_size == 48 * 32 * 32
  with pytest.raises(core_config.ConfigError, match="input_dim=784"):
    ModelConfig(arch=Arch.CONV_RNN, input_dim=784, hidden=0).state_size  # noqa: B018


def test_group_and_batch_norm_equal_naive_loops():
  x = np.asarray(jax.random.normal(jax.random.key(2), (3, 16, 4, 4))) * 3.0 + 1.0
  scale = np.linspace(0.5, 2.0, 16).astype(np.float32)
  bias = np.linspace(-1.0, 1.0, 16).astype(np.float32)
  gn = np.empty_like(x)
  for b in range(3):
    for g in range(8):
      block = x[b, 2 * g : 2 * g + 2]
      gn[b, 2 * g : 2 * g + 2] = (block - block.mean()) / np.sqrt(block.var() + conv_rnn.EPS)
  bn = np.empty_like(x)
  for c in range(16):
    bn[:, c] = (x[:, c] - x[:, c].mean()) / np.sqrt(x[:, c].var() + conv_rnn.EPS)
  affine = scale[None, :, None, None], bias[None, :, None, None]
  np.testing.assert_allclose(
    conv_rnn.group_norm(jnp.asarray(x), scale, bias), gn * affine[0] + affine[1], atol=1e-5
  )
  np.testing.assert_allclose(
    conv_rnn.batch_norm(jnp.asarray(x), scale, bias), bn * affine[0] + affine[1], atol=1e-5
  )


def test_rbp_equals_bptt_on_conv_rnn():
  p = _params()
  x, y = _batch()
  sol = jax.jit(lambda q: free_equilibrium(q, x, CFG, TIGHT.forward))(p)
  assert int(sol.iterations) < 100
  rbp = jax.jit(lambda q: M.rbp_gradient(q, x, y, CFG, TIGHT))(p)
  loss = functools.partial(
    M.training_loss, x=x, labels=y, key=None, cfg=CFG, method=M.Method.BPTT,
    ctrl=M.ControlConfig(), grad_cfg=TIGHT,
  )  # fmt: skip
  bptt = jax.jit(jax.grad(lambda q: loss(q)))(forward_params(p))
  for name in rbp:
    if name == "enc_b":
      # The encoder's BatchNorm subtracts the batch mean: its bias has no effect at all.
      assert float(jnp.max(jnp.abs(rbp[name]))) < 1e-6 > float(jnp.max(jnp.abs(bptt[name])))
      continue
    assert relative_error(rbp[name], bptt[name]) <= 1e-4, name
  # Weak-ish control at initialisation: the local update follows the gradient.
  ctrl = M.ControlConfig(
    alpha=1.0, k_i=0.3, solver=SolverConfig(tol=1e-6, max_iter=800, per_leaf=True)
  )
  update = jax.jit(lambda q: M.lcp_update(q, x, y, CFG, ctrl, TIGHT, M.Method.LCP_DI))(p)
  assert float(M.cosine(update, jax.tree.map(jnp.negative, rbp))) >= 0.99


def test_evaluation_in_batches_matches_each_batch_alone():
  p = _params()
  x, _ = _batch(10)
  table = Table(batch_size=4, eval_solver=SolverConfig(tol=1e-6, max_iter=200))
  logits, iters = jax.jit(lambda q: free_logits_in_batches(q, x, CFG, table))(p)
  assert logits.shape == (10, 10) and int(iters) > 0
  for lo, hi in ((0, 4), (4, 8), (8, 10)):  # two full batches and the short last one
    alone = decoder(p, free_equilibrium(p, x[lo:hi], CFG, table.eval_solver).value)
    np.testing.assert_allclose(logits[lo:hi], alone, rtol=1e-5, atol=1e-5)
  # Batch statistics: the same images read out in one batch give other logits.
  whole = decoder(p, free_equilibrium(p, x, CFG, table.eval_solver).value)
  assert float(jnp.max(jnp.abs(whole - logits))) > 1e-4


def test_rows_and_full_profile():
  assert Row.parse("conv-rnn-lcp-di").arch is Arch.CONV_RNN
  with pytest.raises(core_config.ConfigError, match="conv-rnn supports the methods rbp"):
    Row.parse("conv-rnn-lcp-kp")
  with pytest.raises(core_config.ConfigError, match="bp needs a feedforward arch"):
    Row.parse("conv-rnn-bp")
  full = PROFILES["full"].table2_rnn
  assert full.rows == ("conv-rnn-rbp", "conv-rnn-lcp-di") and full.epochs == 75
  assert dict(full.row_learning_rates) == {"conv-rnn-lcp-di": 0.05} and full.learning_rate == 0.03
  assert (full.control.alpha, full.control.k_i) == (1.0, 0.3)

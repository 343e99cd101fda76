"""Learning rules: signs, KP and LF plumbing, EBD vs DI, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.config import ConfigError
from innerloop_core.fixed_point import SolverConfig
from innerloop_least_control import identities as I
from innerloop_least_control import methods as M
from innerloop_least_control.experiments import Row
from innerloop_least_control.model import Arch, ModelConfig, forward_params, init_params


def _small(arch=Arch.RNN, **kw):
  cfg = ModelConfig(arch=arch, input_dim=8, hidden=12, **kw)
  p = init_params(cfg, jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (16, 8))
  y = jax.random.randint(jax.random.key(3), (16,), 0, 10)
  return cfg, p, x, y


def test_lcp_training_loss_value_is_ce_and_gradient_is_minus_the_update():
  cfg, p, x, y = _small()
  ctrl = M.ControlConfig(solver=SolverConfig(tol=1e-7, max_iter=3000, per_leaf=True))
  g, upd = jax.jit(
    lambda q: (
      jax.grad(M.training_loss)(
        q, x, y, jax.random.key(0), cfg, M.Method.LCP_DI, ctrl, M.GradConfig()
      ),
      M.lcp_update(q, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_DI),
    )
  )(p)
  for n in forward_params(p):
    np.testing.assert_allclose(g[n], -upd[n], rtol=1e-5, atol=1e-9)
  # A small step along the update lowers the loss (the sign is right).
  step = {n: p[n] + 0.5 * upd[n] / jnp.linalg.norm(upd["w"]) for n in forward_params(p)}
  rbp = M.GradConfig(forward=SolverConfig(tol=1e-7, max_iter=3000))
  loss = jax.jit(lambda q: M.training_loss(q, x, y, None, cfg, M.Method.RBP, ctrl, rbp))
  before, after = loss(p), loss(step)
  assert float(after) < float(before)


def test_kp_with_exact_feedback_equals_di():
  """KP dynamics through feedback copies equal to W, D give the DI update exactly."""
  cfg, p, x, y = _small(kp_feedback=True)
  p = {**p, "fb_w": p["w"], "fb_d": p["d"]}
  ctrl = M.ControlConfig(solver=SolverConfig(tol=1e-7, max_iter=3000, per_leaf=True))
  di = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_DI)
  kp = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_KP)
  for n in forward_params(p):
    np.testing.assert_allclose(kp[n], di[n], rtol=1e-5, atol=1e-8)


def test_kp_feedback_gets_the_forward_update():
  cfg, p, x, y = _small(kp_feedback=True)
  ctrl = M.ControlConfig(kp_wd=0.0)
  g = jax.grad(M.training_loss)(
    p, x, y, jax.random.key(0), cfg, M.Method.LCP_KP, ctrl, M.GradConfig()
  )
  np.testing.assert_allclose(g["fb_w"], g["w"], rtol=1e-6)
  np.testing.assert_allclose(g["fb_d"], g["d"], rtol=1e-6)


def test_lf_noise_estimate_approaches_the_mean_jacobian():
  """E[δy ξᵀ]/σ² is the batch-mean hidden-to-output Jacobian J_dec (I − J_f)⁻¹."""
  with I.float64():
    cfg, p, x, _ = _small()
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    x = x.astype(jnp.float64)
    from innerloop_least_control.model import decoder, free_equilibrium, implicit_map

    v = free_equilibrium(p, x, cfg, SolverConfig(tol=1e-12, max_iter=5000)).value
    tight = SolverConfig(tol=1e-12, max_iter=5000)
    keys = jax.random.split(jax.random.key(0), 400)
    estimate = jax.jit(jax.vmap(lambda k: M.lf_noise_estimate(p, x, v, cfg.arch, k, 0.01, tight)))
    est = jnp.mean(estimate(keys), axis=0)
    jf = jax.vmap(jax.jacobian(lambda vv, xx: implicit_map(p, xx[None], vv[None], cfg.arch)[0]))(
      v, x
    )
    jd = jax.vmap(jax.jacobian(lambda vv: decoder(p, vv[None])[0]))(v)
    n = v.shape[1]
    exact = jnp.mean(jd @ jnp.linalg.inv(jnp.eye(n) - jf), axis=0)
    rel = float(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact))
    assert rel < 0.2, rel


def test_free_start_reaches_the_same_equilibrium_when_it_is_unique():
  """At initialisation the rnn has one equilibrium: starting the controlled dynamics at the
  free equilibrium or at rest gives the same controlled equilibrium."""
  cfg, p, x, y = _small()
  solver = SolverConfig(tol=1e-7, max_iter=3000, per_leaf=True)
  rest = M.ControlConfig(solver=solver)
  free = M.ControlConfig(solver=solver, start=M.ControlStart.FREE)
  a = M.lcp_update(p, x, y, cfg, rest, M.GradConfig(), M.Method.LCP_DI)
  b = M.lcp_update(p, x, y, cfg, free, M.GradConfig(), M.Method.LCP_DI)
  for n in forward_params(p):
    np.testing.assert_allclose(b[n], a[n], rtol=1e-4, atol=1e-8)


def test_ebd_reaches_the_di_equilibrium():
  """EBD's Adam minimisation of E ends near the DI fixed point (same stationarity)."""
  cfg, p, x, y = _small()
  ctrl = M.ControlConfig(
    alpha=0.5,
    ebd_steps=3000,
    ebd_lr=0.01,
    solver=SolverConfig(tol=1e-8, max_iter=5000, per_leaf=True),
  )
  di = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_DI)
  ebd = M.lcp_update(p, x, y, cfg, ctrl, M.GradConfig(), M.Method.LCP_EBD)
  assert float(M.cosine(di, ebd)) > 0.99


def test_rows_parse_and_reject_bad_input():
  assert Row.parse("rnn-lcp-di@weak") == Row("rnn-lcp-di@weak", Arch.RNN, M.Method.LCP_DI, True)
  assert Row.parse("rnn-lcp-di@free").free_start
  with pytest.raises(ConfigError, match="suffix must be one of"):
    Row.parse("rnn-lcp-di@strong")
  with pytest.raises(ConfigError, match="control.start must be one of"):
    M.ControlConfig(start="middle")
  with pytest.raises(ConfigError, match="method must be one of"):
    Row.parse("rnn-hebb")
  assert Row.parse("conv-ff-lcp-kp").arch is Arch.CONV_FF
  with pytest.raises(ConfigError, match="bp needs a feedforward arch"):
    Row.parse("rnn-bp")
  with pytest.raises(ConfigError, match="arch must be one of"):
    Row.parse("cnn-bp")

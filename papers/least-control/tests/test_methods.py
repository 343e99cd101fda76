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
from innerloop_least_control.model import (
  Arch,
  BufferInit,
  ModelConfig,
  forward_params,
  hopfield_energy,
  implicit_map,
  init_params,
)


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


@pytest.mark.parametrize("a", [0.0, 0.5])
def test_lf_noise_signal_points_along_the_transposed_jacobian(a):
  """The reference LF rule's ΔQ_noise on a linear system, f(v) = a v + b, dec(v) = D v,
  ∂L/∂y = y − t, q = 0: then v_fb = σε, and u's response to the noise is a scalar filter of
  D ε (every other map is a multiple of I), so E[ΔQ_noise] = −Σ_k E[(u_k − u_ref) ε_kᵀ]/σ =
  γ D with γ > 0 (u_i integrates −δy: the controller opposes the noise that moved y). That is
  the DI feedback e = u J, J = D (I − a I)⁻¹, up to a positive scale: the rule points q
  toward the transposed Jacobian, with the right sign."""
  n, c, b = 6, 3, 4
  d = jax.random.normal(jax.random.key(0), (c, n)) / jnp.sqrt(n)
  bias = jax.random.normal(jax.random.key(1), (b, n))
  target = jax.random.normal(jax.random.key(2), (b, c))
  ctrl = M.ControlConfig(lf_noise=0.01, lf_noise_steps=200)
  # Start at the controlled equilibrium (as the rule does), so only the noise moves u:
  # v = b/(1 − a), u_i = (t − D v)/(k_i + α), y = D v + k_i u_i.
  v = bias / (1.0 - a)
  u_i = (target - v @ d.T) / (ctrl.k_i + ctrl.alpha)
  u_ref = ctrl.k_i * u_i
  start = M.Controlled(v, v @ d.T + u_ref, u_i, jnp.zeros((b, n)))
  q = jnp.zeros((c, n))

  def signal(key):
    return M.lf_noise_signal(
      lambda v: a * v + bias, lambda v: v @ d.T, lambda y: y - target, q, start, u_ref, key, ctrl
    )

  keys = jax.random.split(jax.random.key(3), 4096)  # Monte Carlo: cos 0.92 at 256 keys
  mean = jnp.mean(jax.jit(jax.vmap(signal))(keys), axis=0)
  jac = d / (1.0 - a)
  cos = float(jnp.sum(mean * jac) / (jnp.linalg.norm(mean) * jnp.linalg.norm(jac)))
  assert cos > 0.98, cos


@pytest.mark.parametrize("method", [M.Method.LCP_LF, M.Method.LCP_LF_JAC])
@pytest.mark.parametrize("arch", [Arch.RNN, Arch.FF])
def test_lf_training_loss_moves_the_buffer_by_its_rule_and_weights_by_the_local_rule(method, arch):
  """q's pseudo-gradient is −ΔQ of its own rule (the optimiser applies it as it is), and the
  forward weights get the local rule: for the reference rule ΔW = Σ_b (σ'(v) ⊙ e*) tanh(v*)ᵀ
  (v = f(x, v*) + e*, the slope the code reads), for ours ΔW = Σ_b e* tanh(v*)ᵀ."""
  init = BufferInit.NORMAL if method is M.Method.LCP_LF else BufferInit.ZERO
  cfg, p, x, y = _small(arch, linear_feedback=True, buffer_init=init)
  ctrl = M.ControlConfig(lf_noise_steps=50)
  key = jax.random.key(5)
  grad = jax.jit(
    lambda q: jax.grad(M.training_loss)(q, x, y, key, cfg, method, ctrl, M.GradConfig())
  )(p)
  s, e, u = M.lcp_state(p, x, y, cfg, ctrl, M.GradConfig(), method)
  delta_q = M.lf_buffer_step(p, x, y, s, e, u, key, arch, ctrl, method)
  np.testing.assert_allclose(grad["q"], -delta_q, rtol=1e-4, atol=1e-12)
  assert float(jnp.linalg.norm(delta_q)) > 0
  h = p["w"].shape[0]
  ctrl_e = e
  if method is M.Method.LCP_LF:
    v_att = implicit_map(p, x, s.v, arch) + e
    ctrl_e = (1.0 - jnp.tanh(v_att) ** 2) * e
  # W maps tanh of the first (ff) or only (rnn) block into the last block.
  explicit = ctrl_e[:, -h:].T @ jnp.tanh(s.v[:, :h])
  np.testing.assert_allclose(-grad["w"], explicit, rtol=1e-4, atol=1e-7)


def test_lf_noise_estimate_approaches_the_mean_jacobian():
  """LCP_LF_JAC (ours): E[δy ξᵀ]/σ² is the batch-mean hidden-to-output Jacobian
  J_dec (I − J_f)⁻¹."""
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
  assert Row.parse("rnn-sym-ep") == Row("rnn-sym-ep", Arch.RNN_SYM, M.Method.EP, False)
  with pytest.raises(ConfigError, match="ep needs rnn-sym"):
    Row.parse("rnn-ep")
  with pytest.raises(ConfigError, match="ep needs rnn-sym"):
    Row.parse("rnn-sym-lcp-di")
  with pytest.raises(ConfigError, match="bp needs a feedforward arch"):
    Row.parse("rnn-bp")
  with pytest.raises(ConfigError, match="arch must be one of"):
    Row.parse("cnn-bp")


def test_energy_gradient_is_the_slope_times_the_fixed_point_residual():
  """∂E/∂v = ρ'(v) ⊙ (v − f(x, v)) for rnn-sym: the energy's stationary points are f's."""
  with I.float64():
    cfg, p, x, _ = _small(Arch.RNN_SYM)
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    x = x.astype(jnp.float64)
    v = jax.random.normal(jax.random.key(4), (x.shape[0], cfg.hidden), jnp.float64)
    grad = jax.grad(lambda vv: hopfield_energy(p, x, vv, cfg.arch))(v)
    explicit = (1 - jnp.tanh(v) ** 2) * (v - implicit_map(p, x, v, cfg.arch))
    np.testing.assert_allclose(grad, explicit, rtol=1e-12, atol=1e-12)


def test_ep_update_tends_to_the_gradient_as_beta_shrinks():
  """EP's −(1/β)[∂θ(E + βL)(v^β) − ∂θE(v⁰)] → −∇θ L (RBP) on rnn-sym, with an O(β) error."""
  with I.float64():
    cfg, p, x, y = _small(Arch.RNN_SYM)
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    x = x.astype(jnp.float64)
    tight = SolverConfig(tol=1e-13, max_iter=5000)
    rbp = M.rbp_gradient(p, x, y, cfg, M.GradConfig(forward=tight, backward=tight))
    errors = []
    for beta in (1e-1, 1e-2, 1e-3):
      grad_cfg = M.GradConfig(ep_beta=beta, ep_solver=tight)
      ep = jax.grad(M.training_loss)(p, x, y, None, cfg, M.Method.EP, M.ControlConfig(), grad_cfg)
      num = sum(float(jnp.sum((ep[n] - rbp[n]) ** 2)) for n in rbp)
      den = sum(float(jnp.sum(rbp[n] ** 2)) for n in rbp)
      errors.append((num / den) ** 0.5)
    assert errors[-1] < 1e-3, errors
    assert errors[0] > 5 * errors[1] > 25 * errors[2], errors  # first order in β

"""Tests for innerloop_core.lru: the layer against a literal loop, its gradients against finite
differences, the gradient rules against streaming eligibility traces, pool_st and the block."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.lru import (
  LRU,
  BlockActivation,
  GradientRule,
  LRUBlock,
  exp_parametrization,
  online_trace_grads,
  online_trace_step,
  pool_st,
  ring_init,
  zero_traces,
)
from innerloop_core.scans import ScanImpl
from innerloop_core.testing import relative_error

B, T, H, N = 2, 12, 5, 4
RECURRENT = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im")
IMPLS = [ScanImpl.SEQUENTIAL, ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED]


def _layer(seed=0, **kw) -> LRU:
  kw = {"r_min": 0.5, "r_max": 0.99, **kw}
  return LRU(H, N, key=jax.random.key(seed), **kw)


def _inputs(seed=1, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), (B, T, H), dtype)


def _step_loss(y_t: jax.Array, t) -> jax.Array:
  """A per-step loss that is nonlinear in y and different at every step."""
  w = jnp.cos(jnp.arange(H) + 0.7 * t)
  return jnp.sum(jnp.sin(y_t) * w) / y_t.shape[0]


def _sequence_loss(layer: LRU, x: jax.Array, rule) -> jax.Array:
  y = layer(x, rule=rule)
  return sum(_step_loss(y[:, t], t) for t in range(x.shape[1]))


def _grads(layer: LRU, x: jax.Array, rule):
  graphdef, params = nnx.split(layer)
  g = jax.grad(lambda p: _sequence_loss(nnx.merge(graphdef, p), x, rule))(params)
  return g


def _flat(state) -> dict[str, np.ndarray]:
  return {path[-1]: np.asarray(v[...]) for path, v in nnx.to_flat_state(state)}


def _naive_layer(layer: LRU, x: np.ndarray) -> np.ndarray:
  """y_t = Re(C h_t) + D x_t with complex matrices and a Python loop, in float64."""
  p = {k: np.asarray(v, np.float64) for k, v in _flat(nnx.state(layer)).items()}
  lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
  gamma = np.exp(p["gamma_log"])
  b_mat = p["B_re"] + 1j * p["B_im"]
  c_mat = p["C_re"] + 1j * p["C_im"]
  x = np.asarray(x, np.float64)
  h = np.zeros((x.shape[0], N), complex)
  ys = []
  for t in range(x.shape[1]):
    h = lam * h + gamma * (x[:, t] @ b_mat.T)
    ys.append((h @ c_mat.T).real + p["D"] * x[:, t])
  return np.stack(ys, axis=1)


def test_ring_init_bounds():
  r_min, r_max, max_phase = 0.4, 0.9, 3.0
  nu_log, theta_log, gamma_log = ring_init(jax.random.key(3), 4096, r_min, r_max, max_phase)
  lam, gamma = exp_parametrization(nu_log, theta_log, gamma_log)
  mod = np.abs(np.asarray(lam))
  assert mod.min() >= r_min - 1e-6 and mod.max() <= r_max + 1e-6
  phase = np.exp(np.asarray(theta_log))
  assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
  np.testing.assert_allclose(np.asarray(gamma), np.sqrt(1 - mod**2), atol=1e-6)
  # |λ|² uniform on [r_min², r_max²]: its mean is the midpoint (4096 draws: ±0.01).
  assert abs(np.mean(mod**2) - (r_min**2 + r_max**2) / 2) < 0.01
  with pytest.raises(ValueError, match="r_min"):
    ring_init(jax.random.key(0), 4, 0.9, 0.5, 1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_matches_naive_loop(impl):
  layer, x = _layer(), _inputs()
  got = np.asarray(layer(x, impl=impl))
  np.testing.assert_allclose(got, _naive_layer(layer, x), rtol=0, atol=2e-5)
  # any leading axes, and none
  np.testing.assert_allclose(np.asarray(layer(x[0], impl=impl)), got[0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(layer(x[None], impl=impl))[0], got, atol=1e-6)


@pytest.mark.parametrize("rule", list(GradientRule))
def test_rules_do_not_change_the_forward_value(rule):
  layer, x = _layer(), _inputs()
  np.testing.assert_array_equal(np.asarray(layer(x, rule=rule)), np.asarray(layer(x)))


def test_bptt_gradients_match_finite_differences_float64():
  with jax.enable_x64(True):
    layer = _layer(seed=5)
    graphdef, params = nnx.split(layer)
    params = jax.tree.map(lambda v: v.astype(jnp.float64), params)
    x = _inputs(dtype=jnp.float64)[:, :6]

    def loss(p):
      return _sequence_loss(nnx.merge(graphdef, p), x, GradientRule.BPTT)

    grads = _flat(jax.grad(loss)(params))
    flat = dict(nnx.to_flat_state(params))
    eps = 1e-6
    rng = np.random.default_rng(0)
    for path, var in flat.items():
      name = path[-1]
      if name not in RECURRENT:
        continue
      value = np.asarray(var[...])
      for idx in [tuple(rng.integers(0, s) for s in value.shape) for _ in range(3)]:

        def shifted(d, path=path, value=value, idx=idx):
          new = value.copy()
          new[idx] += d
          p = nnx.from_flat_state({**flat, path: flat[path].replace(jnp.asarray(new))})
          return float(loss(p))

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        got = grads[name][idx]
        assert abs(got - fd) <= 1e-6 * max(abs(fd), 1e-3), (name, idx, got, fd)


def _stream_grads(layer: LRU, x: jax.Array, rule) -> dict[str, np.ndarray]:
  """The online rule as it runs online: one lax.scan over t carrying h and the eligibility
  traces; δ_t from the instantaneous loss at t; C and D from the same per-step VJP."""
  lam, gamma = layer.eigenvalues()
  p = {k: v for k, v in _flat(nnx.state(layer)).items()}

  def step(carry, inp):
    h_prev, traces, acc = carry
    x_t, t = inp
    bx = x_t @ (p["B_re"] + 1j * p["B_im"]).T
    h = lam * h_prev + gamma * bx
    traces = online_trace_step(traces, lam, gamma, h_prev, bx, x_t, rule)

    def loss_t(h, c_re, c_im, d):
      return _step_loss((h @ (c_re + 1j * c_im).T).real + d * x_t, t)

    _, vjp = jax.vjp(loss_t, h, p["C_re"], p["C_im"], p["D"])
    delta, g_cre, g_cim, g_d = vjp(jnp.ones(()))
    g = online_trace_grads(delta, traces, p["nu_log"], p["theta_log"], p["gamma_log"])
    g.update(C_re=g_cre, C_im=g_cim, D=g_d)
    acc = jax.tree.map(jnp.add, acc, g)
    return (h, traces, acc), None

  acc0 = {k: jnp.zeros_like(v) for k, v in p.items()}
  h0 = jnp.zeros((x.shape[0], N), jnp.complex64)
  carry = (h0, zero_traces(x.shape[0], N, H), acc0)
  (_, _, acc), _ = jax.lax.scan(step, carry, (jnp.moveaxis(x, 1, 0), jnp.arange(x.shape[1])))
  return {k: np.asarray(v) for k, v in acc.items()}


def test_single_layer_online_equals_bptt():
  """O1: with one recurrent layer the online gradient is the exact gradient, for every
  parameter of the layer (streaming traces and the stop-gradient formulation alike)."""
  layer, x = _layer(), _inputs()
  bptt = _flat(_grads(layer, x, GradientRule.BPTT))
  online = _flat(_grads(layer, x, GradientRule.ONLINE))
  stream = _stream_grads(layer, x, GradientRule.ONLINE)
  for name, want in bptt.items():
    assert relative_error(online[name], want) <= 1e-5, name
    assert relative_error(stream[name], want) <= 1e-5, name


@pytest.mark.parametrize("rule", [GradientRule.ONE_STEP, GradientRule.SPATIAL])
def test_truncated_rules_match_their_traces(rule):
  layer, x = _layer(), _inputs()
  got = _flat(_grads(layer, x, rule))
  want = _stream_grads(layer, x, rule)
  for name in want:
    if np.all(want[name] == 0):
      np.testing.assert_array_equal(got[name], 0.0)
    else:
      assert relative_error(got[name], want[name]) <= 1e-5, name
  # and they are not BPTT: the truncation removes real temporal credit
  bptt = _flat(_grads(layer, x, GradientRule.BPTT))
  assert relative_error(got["B_re"], bptt["B_re"]) > 1e-2


def test_spatial_rule_gives_exactly_zero_lambda_gradients():
  """O3."""
  g = _flat(_grads(_layer(), _inputs(), GradientRule.SPATIAL))
  np.testing.assert_array_equal(g["nu_log"], 0.0)
  np.testing.assert_array_equal(g["theta_log"], 0.0)
  assert np.any(g["gamma_log"] != 0) and np.any(g["B_re"] != 0)


def test_online_passes_only_the_instantaneous_error_to_the_input():
  """Under ONLINE, ∂L/∂x_t keeps only the time-t path (through γ⊙B and D), the same input
  gradient as SPATIAL, and differs from BPTT's, which also carries later steps' errors."""
  layer, x = _layer(), _inputs()

  def input_grad(rule):
    return jax.grad(lambda x: _sequence_loss(layer, x, rule))(x)

  g_online = input_grad(GradientRule.ONLINE)
  g_spatial = input_grad(GradientRule.SPATIAL)
  np.testing.assert_allclose(np.asarray(g_online), np.asarray(g_spatial), rtol=1e-5, atol=1e-6)
  assert relative_error(g_online, input_grad(GradientRule.BPTT)) > 1e-2


def test_pool_st_forward_is_running_mean_and_backward_identity():
  x = _inputs()
  y = pool_st(x)
  want = np.cumsum(np.asarray(x), axis=1) / np.arange(1, T + 1)[None, :, None]
  np.testing.assert_allclose(np.asarray(y), want, rtol=1e-6, atol=1e-6)
  ct = jax.random.normal(jax.random.key(9), x.shape)
  _, vjp = jax.vjp(pool_st, x)
  np.testing.assert_array_equal(np.asarray(vjp(ct)[0]), np.asarray(ct))


def test_block_dropout_masks_are_shared_over_time_and_keyed():
  block = LRUBlock(H, N, key=jax.random.key(0))
  masks = block.masks(jax.random.key(1), (B,), 0.5)
  assert masks[0].shape == (B, 1, H)
  kept = np.asarray(masks[0])
  assert set(np.unique(kept)) <= {0.0, 2.0}
  x = _inputs()
  a = block(x, dropout_key=jax.random.key(1), dropout_rate=0.5)
  b = block(x, dropout_key=jax.random.key(1), dropout_rate=0.5)
  c = block(x, dropout_key=jax.random.key(2), dropout_rate=0.5)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.allclose(np.asarray(a), np.asarray(c))
  # The block is post(x, LRU(norm(x)), masks): the same per-step function at every t.
  y = block.lru(block.norm(x))
  np.testing.assert_array_equal(np.asarray(block.post(x, y, masks)), np.asarray(a))
  no_drop = block(x)
  np.testing.assert_array_equal(np.asarray(no_drop), np.asarray(block.post(x, y)))


def test_block_without_activation_is_residual_plus_dropout():
  block = LRUBlock(H, N, key=jax.random.key(0), activation=BlockActivation.NONE)
  assert not hasattr(block, "glu_value")  # no GLU weights to train
  x = _inputs()
  y = block.lru(block.norm(x))
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x + y))
  masks = block.masks(jax.random.key(1), (B,), 0.5)
  got = block(x, dropout_key=jax.random.key(1), dropout_rate=0.5)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(x + y * masks[0]))


def test_block_gradients_finite_under_every_rule():
  block = LRUBlock(H, N, key=jax.random.key(0))
  graphdef, params = nnx.split(block)
  x = _inputs()
  for rule in GradientRule:
    g = jax.grad(lambda p, rule=rule: jnp.sum(nnx.merge(graphdef, p)(x, rule=rule) ** 2))(params)
    leaves = jax.tree.leaves(g)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in leaves)


def test_default_max_phase_is_two_pi():
  layer = _layer(r_min=0.0, r_max=1.0)
  assert np.exp(np.asarray(layer.theta_log[...])).max() <= 2 * math.pi

"""The dense linear RNN and GRU baselines: forward against a loop, each rule's autodiff form
against its explicit eligibility traces (SnAp-1 for ONLINE), SnAp-1 != BPTT for a dense
recurrence, and only the current-step error passed to the layer below."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from innerloop_core.dense_rnn import GRU, DenseRNN
from innerloop_core.lru import GradientRule
from innerloop_core.recurrent import gru_self_jacobian, gru_step
from innerloop_core.testing import relative_error

B, T, H, N = 2, 9, 4, 5


def _setup():
  layer = DenseRNN(H, N, key=jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (B, T, H))
  return layer, x


def _step_loss(y_t, t):
  return jnp.sum(jnp.sin(y_t) * jnp.cos(jnp.arange(H) + 0.3 * t)) / y_t.shape[0]


def _autodiff(layer, x, rule):
  graphdef, params = nnx.split(layer)

  def loss(p):
    y = nnx.merge(graphdef, p)(x, rule=rule)
    return sum(_step_loss(y[:, t], t) for t in range(T))

  g = jax.grad(loss)(params)
  return {k[-1]: np.asarray(v[...]) for k, v in nnx.to_flat_state(g)}


def _traces(layer, x, rule):
  """The rule as explicit traces: E^A [B, N, N], E^B [B, N, H], carried forward in time."""
  a, b, c, d = (
    np.asarray(layer.A[...]),
    np.asarray(layer.B[...]),
    np.asarray(layer.C[...]),
    np.asarray(layer.D[...]),
  )
  x = np.asarray(x)
  h = np.zeros((B, N))
  e_a, e_b = np.zeros((B, N, N)), np.zeros((B, N, H))
  g = {"A": np.zeros_like(a), "B": np.zeros_like(b), "C": np.zeros_like(c), "D": np.zeros_like(d)}
  diag = np.diagonal(a)
  for t in range(T):
    h_prev, h = h, h @ a.T + x[:, t] @ b.T
    if rule is GradientRule.ONLINE:
      e_a = diag[None, :, None] * e_a + h_prev[:, None, :]
      e_b = diag[None, :, None] * e_b + x[:, t][:, None, :]
    elif rule is GradientRule.ONE_STEP:
      e_a, e_b = np.broadcast_to(h_prev[:, None, :], e_a.shape), x[:, t][:, None, :] + 0 * e_b
    else:
      e_a, e_b = np.zeros_like(e_a), x[:, t][:, None, :] + 0 * e_b
    _, vjp = jax.vjp(
      lambda h, c, d: _step_loss(h @ c.T + d * x[:, t], t),
      jnp.asarray(h),
      jnp.asarray(c),
      jnp.asarray(d),
    )
    delta, g_c, g_d = (np.asarray(v) for v in vjp(jnp.ones(())))
    g["A"] += np.einsum("bi,bij->ij", delta, e_a)
    g["B"] += np.einsum("bi,bij->ij", delta, e_b)
    g["C"] += g_c
    g["D"] += g_d
  return g


def test_forward_matches_loop():
  layer, x = _setup()
  a, b, c, d = (np.asarray(v) for v in (layer.A[...], layer.B[...], layer.C[...], layer.D[...]))
  h, ys = np.zeros((B, N)), []
  for t in range(T):
    h = h @ a.T + np.asarray(x[:, t]) @ b.T
    ys.append(h @ c.T + d * np.asarray(x[:, t]))
  np.testing.assert_allclose(np.asarray(layer(x)), np.stack(ys, 1), rtol=1e-5, atol=1e-5)
  for rule in GradientRule:
    np.testing.assert_allclose(np.asarray(layer(x, rule=rule)), np.stack(ys, 1), atol=1e-5)


@pytest.mark.parametrize("rule", [GradientRule.ONLINE, GradientRule.ONE_STEP, GradientRule.SPATIAL])
def test_rule_matches_its_traces(rule):
  layer, x = _setup()
  got, want = _autodiff(layer, x, rule), _traces(layer, x, rule)
  for name in ("A", "B", "C", "D"):
    if np.all(want[name] == 0):
      np.testing.assert_array_equal(got[name], 0.0)
    else:
      assert relative_error(got[name], want[name]) <= 1e-5, name


def test_snap1_is_an_approximation_for_dense_a():
  layer, x = _setup()
  online, bptt = _autodiff(layer, x, GradientRule.ONLINE), _autodiff(layer, x, GradientRule.BPTT)
  assert relative_error(online["A"], bptt["A"]) > 1e-2
  assert relative_error(online["C"], bptt["C"]) <= 1e-5  # downstream of h: exact


# ------------------------------------------------------------------------------------ GRU


def _gru_setup():
  layer = GRU(H, key=jax.random.key(2))
  x = jax.random.normal(jax.random.key(3), (B, T, H))
  return layer, x


def _gru_traces(layer, x, rule):
  """SnAp-1 / 1-step / spatial as explicit influence matrices M [B, N, P] over the flattened
  parameters, M_t = diag(J_t) M_{t−1} + I_t (ONLINE), I_t (ONE_STEP), I_t without w_h
  (SPATIAL); I_t = ∂h_t/∂θ with h_{t−1} held fixed, J_t from jax.jacfwd (not the formula)."""
  params = (layer.w_x[...], layer.w_h[...], layer.bias[...])
  flat, unravel = ravel_pytree(params)
  spatial_mask = ravel_pytree((params[0] * 0 + 1, params[1] * 0, params[2] * 0 + 1))[0]
  h = jnp.zeros((B, H))
  m = jnp.zeros((B, H, flat.size))
  g = jnp.zeros_like(flat)
  for t in range(T):
    x_t = x[:, t]
    f_theta = jax.vmap(jax.jacrev(lambda th, h_b, x_b: gru_step(unravel(th), h_b, x_b)[0]))
    immediate = f_theta(jnp.broadcast_to(flat, (B, flat.size)), h, x_t)  # [B, N, P]
    jac = jax.vmap(jax.jacfwd(lambda h_b, x_b: gru_step(params, h_b, x_b)[0]))(h, x_t)
    if rule is GradientRule.ONLINE:
      m = jnp.diagonal(jac, axis1=1, axis2=2)[:, :, None] * m + immediate
    elif rule is GradientRule.ONE_STEP:
      m = immediate
    else:
      m = immediate * spatial_mask
    h = gru_step(params, h, x_t)[0]
    delta = jax.grad(lambda h_t: _step_loss(h_t, t))(h)
    g = g + jnp.einsum("bi,bip->p", delta, m)
  w_x, w_h, bias = unravel(g)
  return {"w_x": np.asarray(w_x), "w_h": np.asarray(w_h), "bias": np.asarray(bias)}


def test_gru_self_jacobian_is_the_jacobian_diagonal():
  layer, x = _gru_setup()
  params = (layer.w_x[...], layer.w_h[...], layer.bias[...])
  h = jnp.tanh(jax.random.normal(jax.random.key(4), (B, H)))
  jac = jax.vmap(jax.jacfwd(lambda h_b, x_b: gru_step(params, h_b, x_b)[0]))(h, x[:, 0])
  got = gru_self_jacobian(params, h, x[:, 0])
  assert relative_error(got, jnp.diagonal(jac, axis1=1, axis2=2)) <= 1e-6


def test_gru_forward_matches_the_cell_loop_for_every_rule():
  layer, x = _gru_setup()
  params = (layer.w_x[...], layer.w_h[...], layer.bias[...])
  h, ys = jnp.zeros((B, H)), []
  for t in range(T):
    h = gru_step(params, h, x[:, t])[0]
    ys.append(h)
  want = np.stack(ys, 1)
  for rule in GradientRule:
    np.testing.assert_allclose(np.asarray(layer(x, rule=rule)), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", [GradientRule.ONLINE, GradientRule.ONE_STEP, GradientRule.SPATIAL])
def test_gru_rule_matches_its_traces(rule):
  layer, x = _gru_setup()
  got, want = _autodiff(layer, x, rule), _gru_traces(layer, x, rule)
  for name in ("w_x", "w_h", "bias"):
    if np.all(want[name] == 0):
      np.testing.assert_array_equal(got[name], 0.0)
    else:
      assert relative_error(got[name], want[name]) <= 1e-5, name


def test_gru_snap1_is_an_approximation():
  layer, x = _gru_setup()
  online, bptt = _autodiff(layer, x, GradientRule.ONLINE), _autodiff(layer, x, GradientRule.BPTT)
  assert relative_error(online["w_h"], bptt["w_h"]) > 1e-2


@pytest.mark.parametrize("make", [_setup, _gru_setup], ids=["dense_linear", "gru"])
def test_layer_below_gets_only_the_current_step_error(make):
  """Every non-BPTT rule passes Σ_t (∂h_t/∂x_t)ᵀ ∂L_t/∂y_t down (h_{t−1} held fixed), the same
  for ONLINE, ONE_STEP and SPATIAL; BPTT passes the future's error too."""
  layer, x = make()
  graphdef, params = nnx.split(layer)

  def input_grad(rule):
    def loss(x):
      y = nnx.merge(graphdef, params)(x, rule=rule)
      return sum(_step_loss(y[:, t], t) for t in range(T))

    return np.asarray(jax.grad(loss)(x))

  online = input_grad(GradientRule.ONLINE)
  for rule in (GradientRule.ONE_STEP, GradientRule.SPATIAL):
    np.testing.assert_allclose(input_grad(rule), online, rtol=1e-5, atol=1e-6)
  assert relative_error(online, input_grad(GradientRule.BPTT)) > 1e-2


def test_gru_reference_derivative_changes_only_snap1():
  """The reference code's σ(a)σ(1 − a) in SnAp-1's diagonal: ONLINE moves, the rest not."""
  layer, x = _gru_setup()
  mirrored = GRU(H, key=jax.random.key(2), snap_derivative="reference")
  for rule in GradientRule:
    got, want = _autodiff(mirrored, x, rule), _autodiff(layer, x, rule)
    err = max(relative_error(got[k], want[k]) for k in ("w_x", "w_h", "bias"))
    assert (err > 1e-3) if rule is GradientRule.ONLINE else (err == 0.0), rule

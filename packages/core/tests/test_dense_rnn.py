"""The dense linear RNN baseline: forward against a loop, each rule's autodiff form against its
explicit eligibility traces (SnAp-1 for ONLINE), and SnAp-1 != BPTT for a dense A."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.dense_rnn import DenseRNN
from innerloop_core.lru import GradientRule
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

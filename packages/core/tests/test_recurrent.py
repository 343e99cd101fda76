"""Recurrent layers against naive per-step numpy loops, every scan implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.config import ConfigError
from innerloop_core.recurrent import (
  Decay,
  Gate,
  GatedCellRNN,
  GatedLinearRNN,
  RNNKind,
  gated_rnn,
)
from innerloop_core.scans import ScanImpl

B, T, D, N, M, O = 3, 9, 4, 6, 5, 2


def _sigmoid(u):
  return 1.0 / (1.0 + np.exp(-u))


def _naive_gated_rnn(x, w, gate):
  g = (lambda u: u) if gate is Gate.LINEAR else _sigmoid
  w = [np.asarray(a, np.float64) for a in w]
  w_in_x, w_in_g, lam, w_out_x, w_out_g, w_read = w
  ys = np.zeros((x.shape[0], x.shape[1], w_read.shape[1]))
  for b in range(x.shape[0]):
    h = np.zeros(lam.shape)
    for t in range(x.shape[1]):
      xt = np.append(x[b, t], 1.0)
      h = lam * h + (xt @ w_in_x) * g(xt @ w_in_g)
      ys[b, t] = ((h @ w_out_x) * g(h @ w_out_g)) @ w_read
  return ys


@pytest.mark.parametrize("impl", [ScanImpl.SEQUENTIAL, ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED])
@pytest.mark.parametrize("gate", list(Gate))
@pytest.mark.parametrize("decay", list(Decay))
def test_gated_rnn_matches_loop(impl, gate, decay):
  model = GatedLinearRNN(D, N, M, O, key=jax.random.key(0), gate=gate, decay=decay)
  lam = model.lam()
  assert bool(jnp.all((lam >= 0.1 - 1e-6) & (lam <= 0.9 + 1e-6)))
  x = np.random.default_rng(1).normal(size=(B, T, D)).astype(np.float32)
  got = model(jnp.asarray(x), impl=impl)
  want = _naive_gated_rnn(x, model.weights(), gate)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
  assert model.states(jnp.asarray(x), impl=impl).shape == (B, T, N)


def test_gated_rnn_gradients_agree_across_impls():
  model = GatedLinearRNN(D, N, M, O, key=jax.random.key(2))
  w = model.weights()
  x = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, D)), jnp.float32)

  def loss(w, impl):
    return jnp.sum(gated_rnn(x, w, impl=impl) ** 2)

  ref = jax.grad(loss)(w, ScanImpl.SEQUENTIAL)
  for impl in (ScanImpl.ASSOCIATIVE, ScanImpl.CHUNKED):
    got = jax.grad(loss)(w, impl)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_clipped_decay_reaches_zero_and_one():
  model = GatedLinearRNN(D, N, M, O, key=jax.random.key(0), decay="clipped")
  model.nu[...] = jnp.array([-0.5, 0.0, 0.3, 1.0, 1.7, 0.99])
  want = np.array([0.0, 0.0, 0.3, 1.0, 1.0, 0.99], np.float32)
  np.testing.assert_array_equal(np.asarray(model.lam()), want)


def test_bad_gate_names_the_field():
  with pytest.raises(ConfigError, match="gate"):
    GatedLinearRNN(D, N, M, O, key=jax.random.key(0), gate="tanh")


def _naive_cell(kind, x, w_x, w_h, bias, hidden):
  w_x, w_h, bias = (np.asarray(a, np.float64) for a in (w_x, w_h, bias))
  hs = np.zeros((x.shape[0], x.shape[1], hidden))
  for b in range(x.shape[0]):
    h, c = np.zeros(hidden), np.zeros(hidden)
    for t in range(x.shape[1]):
      if kind is RNNKind.LSTM:
        i, f, g, o = np.split(x[b, t] @ w_x + h @ w_h + bias, 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
      else:
        ux, uh = x[b, t] @ w_x + bias, h @ w_h
        z = _sigmoid(ux[:hidden] + uh[:hidden])
        r = _sigmoid(ux[hidden : 2 * hidden] + uh[hidden : 2 * hidden])
        n = np.tanh(ux[2 * hidden :] + r * uh[2 * hidden :])
        h = (1 - z) * h + z * n
      hs[b, t] = h
  return hs


@pytest.mark.parametrize("kind", list(RNNKind))
def test_cell_rnns_match_loop(kind):
  model = GatedCellRNN(kind, D, N, O, key=jax.random.key(4))
  rng = np.random.default_rng(5)
  # Random biases exercise every gate's offset (init has them at 0 or 1).
  model.bias[...] = jnp.asarray(rng.normal(size=model.bias.shape), jnp.float32)
  x = rng.normal(size=(B, T, D)).astype(np.float32)
  states = model.states(jnp.asarray(x))
  want = _naive_cell(kind, x, model.w_x[...], model.w_h[...], model.bias[...], N)
  np.testing.assert_allclose(np.asarray(states["h"]), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(model(jnp.asarray(x))), want @ np.asarray(model.w_read[...]), rtol=1e-5, atol=1e-5
  )
  assert ("c" in states) == (kind is RNNKind.LSTM)

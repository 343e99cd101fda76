"""Recurrent layers: the gated linear RNN of Zucchet et al. (2024), LSTM and GRU.

Shape notation (used in every docstring below):
    B  batch
    T  time steps
    D  input width
    N  recurrent neurons (the diagonal state)
    M  output-gate units (the products read out of the state)
    O  output width

Weights use the (in, out) layout of ``attention``: a projection reads ``u = x @ w``.

The gated linear RNN, with x̃_t = [x_t; 1] (a constant 1 appended instead of biases, so a
purely multiplicative gate can still pass an input straight through):
    a_t = (x̃_t W_in_x) ⊙ g(x̃_t W_in_g)           input gating          [B, T, N]
    h_t = λ ⊙ h_{t-1} + a_t,  λ ∈ [0, 1]^N          diagonal recurrence   [B, T, N]
    y_t = [(h_t W_out_x) ⊙ g(h_t W_out_g)] W_read   output gating         [B, T, O]
g is the identity for the theory's multiplicative gates (``Gate.LINEAR``) and the logistic
sigmoid for the "sigmoid-gate" variant (``Gate.SIGMOID``). The recurrence runs on
``scans.linear_scan``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from innerloop_core.config import parse_enum
from innerloop_core.scans import ScanImpl, linear_scan


class Gate(enum.Enum):
  """The non-linearity g on the gating branch of both gates."""

  LINEAR = "linear"  # g(u) = u: gates are products of two linear maps (the theory)
  SIGMOID = "sigmoid"  # g(u) = σ(u): the usual gating, bounded in (0, 1)


class Decay(enum.Enum):
  """How the trainable parameter ν maps to the decay λ."""

  # λ = σ(ν): smooth, reaches 0 and 1 only in the limit (train with this).
  SIGMOID = "sigmoid"
  # λ = clip(ν, 0, 1): exactly 0 and 1 are attainable (hand-built constructions).
  CLIPPED = "clipped"


class GatedRNNWeights(NamedTuple):
  """All weights of one gated linear RNN, λ already mapped to [0, 1]."""

  w_in_x: jax.Array  # [D+1, N]
  w_in_g: jax.Array  # [D+1, N]
  lam: jax.Array  # [N]
  w_out_x: jax.Array  # [N, M]
  w_out_g: jax.Array  # [N, M]
  w_read: jax.Array  # [M, O]


def _gate_fn(gate: Gate):
  return (lambda u: u) if gate is Gate.LINEAR else jax.nn.sigmoid


def append_one(x: jax.Array) -> jax.Array:
  """x [..., D] -> x̃ [..., D+1] with a constant 1 in the last slot."""
  return jnp.concatenate([x, jnp.ones(x.shape[:-1] + (1,), x.dtype)], axis=-1)


def gated_rnn_states(
  x: jax.Array,
  w: GatedRNNWeights,
  *,
  gate: Gate | str = Gate.LINEAR,
  impl: ScanImpl | str = ScanImpl.AUTO,
) -> jax.Array:
  """The recurrent states h [B, T, N] of the gated linear RNN for inputs x [B, T, D]."""
  g = _gate_fn(parse_enum(gate, Gate, "gate"))
  if x.shape[-1] + 1 != w.w_in_x.shape[0]:
    raise ValueError(f"x has width {x.shape[-1]}, the weights expect D = {w.w_in_x.shape[0] - 1}")
  x1 = append_one(x)
  a = (x1 @ w.w_in_x) * g(x1 @ w.w_in_g)
  h, _ = linear_scan(jnp.broadcast_to(w.lam, a.shape), a, impl=impl)
  return h


def gated_rnn_readout(
  h: jax.Array, w: GatedRNNWeights, *, gate: Gate | str = Gate.LINEAR
) -> jax.Array:
  """Output gating and readout: h [..., N] -> y [..., O] (instantaneous in h_t)."""
  g = _gate_fn(parse_enum(gate, Gate, "gate"))
  return ((h @ w.w_out_x) * g(h @ w.w_out_g)) @ w.w_read


def gated_rnn(
  x: jax.Array,
  w: GatedRNNWeights,
  *,
  gate: Gate | str = Gate.LINEAR,
  impl: ScanImpl | str = ScanImpl.AUTO,
) -> jax.Array:
  """The gated linear RNN as free function: x [B, T, D] -> y [B, T, O]."""
  return gated_rnn_readout(gated_rnn_states(x, w, gate=gate, impl=impl), w, gate=gate)


def _fan_in_normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
  return jax.random.normal(key, shape, jnp.float32) * jnp.sqrt(scale / shape[0])


class GatedLinearRNN(nnx.Module):
  """Trainable gated linear RNN (module docstring): x [B, T, D] -> y [B, T, O].

  Init: every matrix N(0, scale / fan_in); λ uniform in [lam_min, lam_max] (through the
  inverse of the chosen ``Decay`` map), so training starts with neither perfect memory nor
  none and has to find both.
  """

  def __init__(
    self,
    in_dim: int,
    num_neurons: int,
    num_out_gates: int,
    out_dim: int,
    *,
    key: jax.Array,
    gate: Gate | str = Gate.LINEAR,
    decay: Decay | str = Decay.SIGMOID,
    init_scale: float = 1.0,
    lam_min: float = 0.1,
    lam_max: float = 0.9,
  ):
    self.gate = parse_enum(gate, Gate, "gate")
    self.decay = parse_enum(decay, Decay, "decay")
    k = jax.random.split(key, 6)
    d1, n, m = in_dim + 1, num_neurons, num_out_gates
    self.w_in_x = nnx.Param(_fan_in_normal(k[0], (d1, n), init_scale))
    self.w_in_g = nnx.Param(_fan_in_normal(k[1], (d1, n), init_scale))
    lam = jax.random.uniform(k[2], (n,), jnp.float32, lam_min, lam_max)
    self.nu = nnx.Param(jnp.log(lam) - jnp.log1p(-lam) if self.decay is Decay.SIGMOID else lam)
    self.w_out_x = nnx.Param(_fan_in_normal(k[3], (n, m), init_scale))
    self.w_out_g = nnx.Param(_fan_in_normal(k[4], (n, m), init_scale))
    self.w_read = nnx.Param(_fan_in_normal(k[5], (m, out_dim), init_scale))

  def lam(self) -> jax.Array:
    """λ [N] in [0, 1]."""
    nu = self.nu[...]
    return jax.nn.sigmoid(nu) if self.decay is Decay.SIGMOID else jnp.clip(nu, 0.0, 1.0)

  def weights(self) -> GatedRNNWeights:
    return GatedRNNWeights(
      self.w_in_x[...],
      self.w_in_g[...],
      self.lam(),
      self.w_out_x[...],
      self.w_out_g[...],
      self.w_read[...],
    )

  def states(self, x: jax.Array, *, impl: ScanImpl | str = ScanImpl.AUTO) -> jax.Array:
    """h [B, T, N]."""
    return gated_rnn_states(x, self.weights(), gate=self.gate, impl=impl)

  def __call__(self, x: jax.Array, *, impl: ScanImpl | str = ScanImpl.AUTO) -> jax.Array:
    """y [B, T, O]."""
    return gated_rnn(x, self.weights(), gate=self.gate, impl=impl)


def _lstm_step(params, carry, x_t):
  """One LSTM step. carry (h, c) [B, N] each; x_t [B, D]."""
  w_x, w_h, bias = params
  h, c = carry
  i, f, g, o = jnp.split(x_t @ w_x + h @ w_h + bias, 4, axis=-1)
  # c_t = f ⊙ c_{t-1} + i ⊙ g: f = 1 keeps a perfect memory, f = 0 a memory-less unit.
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (h, c), (h, c)


def gru_step(params, h, x_t):
  """One GRU step (Cho et al. 2014, reset applied before the recurrent matmul).

  params (w_x [D, 3N], w_h [N, 3N], bias [3N]) in gate order (z, r, n); h [B, N], x_t [B, D].
  Returns (h_t, h_t) for `lax.scan`.
  """
  w_x, w_h, bias = params
  n = h.shape[-1]
  ux = x_t @ w_x + bias
  uh = h @ w_h
  z = jax.nn.sigmoid(ux[..., :n] + uh[..., :n])
  r = jax.nn.sigmoid(ux[..., n : 2 * n] + uh[..., n : 2 * n])
  cand = jnp.tanh(ux[..., 2 * n :] + r * uh[..., 2 * n :])
  # h_t = (1 - z) ⊙ h_{t-1} + z ⊙ n_t: keeping h (z = 0) forbids writing, so a GRU unit
  # cannot be a perfect accumulator the way a λ = 1 gated-RNN neuron is.
  h = (1.0 - z) * h + z * cand
  return h, h


class SigmoidDerivative(enum.Enum):
  """The σ' that `gru_self_jacobian` uses for the gates."""

  EXACT = "exact"  # σ'(a) = σ(a)σ(−a)
  # σ(a)σ(1 − a), as the reference SnAp-1 GRU code writes it (sheet pitfall): kept only to
  # mirror the published Table 1 rows next to the exact ones.
  REFERENCE = "reference"


def gru_self_jacobian(
  params, h, x_t, derivative: SigmoidDerivative = SigmoidDerivative.EXACT
) -> jax.Array:
  """The diagonal of ∂h_t/∂h_{t−1} of `gru_step`, [B, N] (what SnAp-1 keeps):

      ∂h_i/∂h_i = (1 − z_i) + (n_i − h_i) σ'(a_z,i) U_z[i, i]
                  + z_i (1 − n_i²) (r_i U_n[i, i] + (h U_n)_i σ'(a_r,i) U_r[i, i])
  with U_z, U_r, U_n the three N×N blocks of w_h and a_z, a_r the gates' pre-activations.
  """
  w_x, w_h, bias = params
  n = h.shape[-1]
  ux = x_t @ w_x + bias
  uh = h @ w_h
  a_z = ux[..., :n] + uh[..., :n]
  a_r = ux[..., n : 2 * n] + uh[..., n : 2 * n]
  z, r = jax.nn.sigmoid(a_z), jax.nn.sigmoid(a_r)
  cand = jnp.tanh(ux[..., 2 * n :] + r * uh[..., 2 * n :])
  if derivative is SigmoidDerivative.EXACT:
    dz, dr = z * (1.0 - z), r * (1.0 - r)
  else:
    dz, dr = z * jax.nn.sigmoid(1.0 - a_z), r * jax.nn.sigmoid(1.0 - a_r)
  u_z, u_r, u_n = (jnp.diagonal(w_h[:, k * n : (k + 1) * n]) for k in range(3))
  d_cand = (1.0 - cand**2) * (r * u_n + uh[..., 2 * n :] * dr * u_r)
  return (1.0 - z) + (cand - h) * dz * u_z + z * d_cand


class RNNKind(enum.Enum):
  LSTM = "lstm"
  GRU = "gru"


class GatedCellRNN(nnx.Module):
  """A one-layer LSTM or GRU with a linear readout: x [B, T, D] -> y [B, T, O].

  Init: input matrices N(0, 1/D), recurrent matrices N(0, 1/N), zero biases except the
  LSTM forget gate (+1, the usual choice for remembering by default).
  """

  def __init__(self, kind: RNNKind | str, in_dim: int, hidden: int, out_dim: int, *, key):
    self.kind = parse_enum(kind, RNNKind, "kind")
    gates = 4 if self.kind is RNNKind.LSTM else 3
    k = jax.random.split(key, 3)
    self.w_x = nnx.Param(_fan_in_normal(k[0], (in_dim, gates * hidden)))
    self.w_h = nnx.Param(_fan_in_normal(k[1], (hidden, gates * hidden)))
    bias = jnp.zeros((gates * hidden,), jnp.float32)
    if self.kind is RNNKind.LSTM:
      bias = bias.at[hidden : 2 * hidden].set(1.0)
    self.bias = nnx.Param(bias)
    self.w_read = nnx.Param(_fan_in_normal(k[2], (hidden, out_dim)))
    self.hidden = hidden

  def states(self, x: jax.Array) -> dict[str, jax.Array]:
    """{"h": [B, T, N]} (and "c" for the LSTM cell state)."""
    params = (self.w_x[...], self.w_h[...], self.bias[...])
    zeros = jnp.zeros((x.shape[0], self.hidden), x.dtype)
    xs = jnp.moveaxis(x, 1, 0)
    if self.kind is RNNKind.LSTM:
      _, (h, c) = lax.scan(lambda carry, x_t: _lstm_step(params, carry, x_t), (zeros, zeros), xs)
      return {"h": jnp.moveaxis(h, 0, 1), "c": jnp.moveaxis(c, 0, 1)}
    _, h = lax.scan(lambda carry, x_t: gru_step(params, carry, x_t), zeros, xs)
    return {"h": jnp.moveaxis(h, 0, 1)}

  def __call__(self, x: jax.Array) -> jax.Array:
    """y [B, T, O]."""
    return self.states(x)["h"] @ self.w_read[...]

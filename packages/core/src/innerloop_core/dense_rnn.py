"""Dense recurrent layers and their online approximations (baselines of Zucchet et al. 2023):
the dense linear RNN and the GRU.

Shape notation: B batch, T steps, H d_model (input and output width), N hidden units.

    dense linear RNN   h_t = A h_{t−1} + B x_t,  h_0 = 0  (A ∈ ℝ^{N×N} dense, linear)
                       y_t = C h_t + D ⊙ x_t
    GRU                h_t = GRU(h_{t−1}, x_t)   (`recurrent.gru_step`, N = H),  y_t = h_t

Gradient rules (`innerloop_core.lru.GradientRule`, same forward value for every rule; as for
the LRU, a layer passes only the current-step error to the layer below, through a zero-valued
term outside its recurrence):
  BPTT      exact.
  ONLINE    SnAp-1 (Menick et al. 2021): the influence of a parameter on h_t is carried only
            through the diagonal of the recurrent Jacobian J_t = ∂h_t/∂h_{t−1},
              M_t[i, θ] = J_t[i, i] M_{t−1}[i, θ] + ∂h_t,i/∂θ (immediate)
            written for autodiff as h_t = f(sg(h_{t−1}), sg(x_t); θ) + sg(diag J_t)⊙(h_{t−1} −
            sg(h_{t−1})); for the linear RNN diag J_t = diag(A). For the LRU (diagonal) it
            is exact; for a dense A or a GRU it is an approximation.
  ONE_STEP  immediate dependence on θ only, h_{t−1} held fixed (∂h_t/∂A = h_{t−1}).
  SPATIAL   no temporal credit: the recurrent weights (A; the GRU's w_h) get no gradient, the
            input weights their immediate one.
The sequences run as a lax.scan (a dense recurrence has no diagonal parallel form).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.config import parse_enum
from innerloop_core.lru import GradientRule
from innerloop_core.recurrent import SigmoidDerivative, gru_self_jacobian, gru_step

sg = jax.lax.stop_gradient


class DenseRNN(nnx.Module):
  """x [..., T, H] -> y [..., T, H]; A truncated-normal(±2σ)/√N, B N(0, 1/H), C N(0, 1/N),
  D N(0, 1)."""

  def __init__(self, d_model: int, d_hidden: int, *, key: jax.Array):
    k_a, k_b, k_c, k_d = jax.random.split(key, 4)
    self.d_model, self.d_hidden = d_model, d_hidden
    a = jax.random.truncated_normal(k_a, -2.0, 2.0, (d_hidden, d_hidden)) / math.sqrt(d_hidden)
    self.A = nnx.Param(a)
    self.B = nnx.Param(jax.random.normal(k_b, (d_hidden, d_model)) / math.sqrt(d_model))
    self.C = nnx.Param(jax.random.normal(k_c, (d_model, d_hidden)) / math.sqrt(d_hidden))
    self.D = nnx.Param(jax.random.normal(k_d, (d_model,)))

  def hidden_states(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT):
    """h [B, T, N] for x [B, T, H] with `rule`'s gradient."""
    rule = parse_enum(rule, GradientRule, "rule")
    a, b = self.A[...], self.B[...]
    xs = jnp.moveaxis(x, 1, 0)  # time first for lax.scan
    h0 = jnp.zeros((x.shape[0], self.d_hidden), x.dtype)
    if rule is GradientRule.BPTT:

      def step(h, x_t):
        h = h @ a.T + x_t @ b.T
        return h, h

      return jnp.moveaxis(jax.lax.scan(step, h0, xs)[1], 0, 1)
    if rule is GradientRule.ONLINE:
      diag = jnp.diagonal(a)
      off = a - jnp.diag(diag)

      def step(h, x_t):
        h = diag * h + sg(h) @ off.T + sg(x_t) @ b.T
        return h, h

      h = jnp.moveaxis(jax.lax.scan(step, h0, xs)[1], 0, 1)
      inst = x @ sg(b).T  # the current-step error's path to the layer below
      return h + (inst - sg(inst))
    # ONE_STEP / SPATIAL: exact values, gradients from time t only.
    h = sg(self.hidden_states(x, rule=GradientRule.BPTT))
    drive = x @ b.T
    h = h + (drive - sg(drive))
    if rule is GradientRule.ONE_STEP:
      h_prev = jnp.pad(h, ((0, 0), (1, 0), (0, 0)))[:, :-1]
      step = sg(h_prev) @ a.T
      h = h + (step - sg(step))
    return h

  def __call__(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT, **_):
    """y [..., T, H] for x [..., T, H]. Extra keywords (e.g. a scan `impl`) are ignored: the
    dense recurrence always runs as a lax.scan."""
    lead, (steps, width) = x.shape[:-2], x.shape[-2:]
    flat = x.reshape((-1, steps, width))
    h = self.hidden_states(flat, rule=rule)
    y = h @ self.C[...].T + self.D[...] * flat
    return y.reshape(lead + (steps, width))


class GRU(nnx.Module):
  """A GRU layer with N = H units and y_t = h_t: x [..., T, H] -> y [..., T, H].

  Init as `recurrent.GatedCellRNN`'s GRU: w_x N(0, 1/H), w_h N(0, 1/N), zero bias.
  `snap_derivative` is the σ' of SnAp-1's Jacobian diagonal (REFERENCE mirrors the reference
  code's σ(a)σ(1 − a)); it changes the ONLINE gradient only.
  """

  def __init__(
    self,
    d_model: int,
    *,
    key: jax.Array,
    snap_derivative: SigmoidDerivative | str = SigmoidDerivative.EXACT,
  ):
    k_x, k_h = jax.random.split(key)
    self.d_model = d_model
    self.snap_derivative = parse_enum(snap_derivative, SigmoidDerivative, "snap_derivative")
    self.w_x = nnx.Param(jax.random.normal(k_x, (d_model, 3 * d_model)) / math.sqrt(d_model))
    self.w_h = nnx.Param(jax.random.normal(k_h, (d_model, 3 * d_model)) / math.sqrt(d_model))
    self.bias = nnx.Param(jnp.zeros((3 * d_model,), jnp.float32))

  def hidden_states(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT):
    """h [B, T, N] for x [B, T, H] with `rule`'s gradient (module docstring)."""
    rule = parse_enum(rule, GradientRule, "rule")
    params = (self.w_x[...], self.w_h[...], self.bias[...])
    frozen = tuple(sg(p) for p in params)
    xs = jnp.moveaxis(x, 1, 0)
    h0 = jnp.zeros((x.shape[0], self.d_model), x.dtype)
    if rule is GradientRule.BPTT:
      h = jax.lax.scan(lambda h, x_t: gru_step(params, h, x_t), h0, xs)[1]
      return jnp.moveaxis(h, 0, 1)
    if rule is GradientRule.ONLINE:

      def step(h, x_t):
        h_fixed = sg(h)
        diag = sg(gru_self_jacobian(params, h_fixed, x_t, self.snap_derivative))
        h = gru_step(params, h_fixed, sg(x_t))[0] + diag * (h - h_fixed)
        return h, h

      h = jnp.moveaxis(jax.lax.scan(step, h0, xs)[1], 0, 1)
    else:  # ONE_STEP / SPATIAL: exact values, each step's gradient from h_{t−1} held fixed
      h_value = sg(self.hidden_states(x, rule=GradientRule.BPTT))
      h_prev = jnp.pad(h_value, ((0, 0), (1, 0), (0, 0)))[:, :-1]
      used = params if rule is GradientRule.ONE_STEP else (params[0], frozen[1], params[2])
      h = _gru_steps(used, h_prev, sg(x))
      h = h_value + (h - sg(h))
    inst = _gru_steps(frozen, sg(jnp.pad(h, ((0, 0), (1, 0), (0, 0)))[:, :-1]), x)
    return h + (inst - sg(inst))  # the current-step error's path to the layer below

  def __call__(self, x: jax.Array, *, rule: GradientRule | str = GradientRule.BPTT, **_):
    """y [..., T, H] for x [..., T, H]. Extra keywords (e.g. a scan `impl`) are ignored."""
    lead, (steps, width) = x.shape[:-2], x.shape[-2:]
    h = self.hidden_states(x.reshape((-1, steps, width)), rule=rule)
    return h.reshape(lead + (steps, width))


def _gru_steps(params, h_prev: jax.Array, x: jax.Array) -> jax.Array:
  """`gru_step` applied at every t at once from given h_{t−1}: [B, T, N]."""
  return gru_step(params, h_prev, x)[0]

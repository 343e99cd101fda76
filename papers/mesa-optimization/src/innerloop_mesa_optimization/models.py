"""The "constructed-token" models of the paper: deep LSA and the mesa-layer (sheet §3.2).

Shape notation: B sequences, T steps, D token width (4N = 40), N state width (10), L layers,
H heads, K key size. Weights use core attention's (in, out) layout, stacked over layers:
w_q, w_k: [L, H, D, K], w_v: [L, H, D, K], w_p: [L, H, K, D].

A layer reads e <- clip(e + Δe, ±clip) with Δe the causal (diagonal included) linear
self-attention or mesa-layer increment; no embedding, LayerNorm, MLP or bias. The prediction
of s_{t+1} is read from the first N dims of the last layer's tokens.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.attention import Mask, linear_attention
from innerloop_core.config import parse_enum


class LayerKind(enum.Enum):
  LINEAR = "linear"  # causal linear self-attention (LSA)
  MESA = "mesa"  # the mesa-layer: per-head ridge regression solved at every t


class ConstructedModel(nnx.Module):
  """L layers of LSA or mesa attention on constructed tokens [B, T, D]."""

  def __init__(
    self,
    *,
    num_layers: int,
    num_heads: int,
    key_size: int,
    dim: int,
    kind: LayerKind | str,
    key: jax.Array,
    init_std: float = 2e-4,
    input_mask: jax.Array | None = None,
    clip: float | None = 4.0,
    mesa_lambda_init: float = 1.0,
    mesa_impl: str = "auto",
  ):
    if num_layers < 1:
      raise ValueError(f"num_layers must be >= 1; got {num_layers}")
    self.kind = parse_enum(kind, LayerKind, "kind")
    self.clip = clip
    self.mesa_impl = mesa_impl  # an innerloop_core.mesa.MesaImpl value
    # A tuple, not an array: static graph data rather than a state leaf.
    self.input_mask = None if input_mask is None else tuple(float(m) for m in input_mask)
    kq, kk, kv, kp = jax.random.split(key, 4)
    shape = (num_layers, num_heads, dim, key_size)
    normal = lambda k, s: init_std * jax.random.normal(k, s, jnp.float32)  # noqa: E731
    self.w_q = nnx.Param(normal(kq, shape))
    self.w_k = nnx.Param(normal(kk, shape))
    self.w_v = nnx.Param(normal(kv, shape))
    self.w_p = nnx.Param(normal(kp, (num_layers, num_heads, key_size, dim)))
    if self.kind is LayerKind.MESA:
      # λ_h: R_0 = λ I, learnable, init 1, no positivity transform (as the authors' code).
      self.mesa_lambda = nnx.Param(jnp.full((num_layers, num_heads), mesa_lambda_init))

  @property
  def num_layers(self) -> int:
    return self.w_q.shape[0]

  def layer_increment(self, e: jax.Array, layer: int) -> jax.Array:
    """Δe [B, T, D] of layer `layer` for tokens e [B, T, D]."""
    w = (self.w_q[layer], self.w_k[layer], self.w_v[layer], self.w_p[layer])
    if self.kind is LayerKind.LINEAR:
      return linear_attention(e, *w, mask=Mask.CAUSAL)
    from innerloop_core.mesa import mesa_layer

    return mesa_layer(e, *w, self.mesa_lambda[layer], impl=self.mesa_impl)

  def __call__(self, e: jax.Array, *, return_all: bool = False):
    """e [B, T, D] -> e_L [B, T, D], or (e_L, [e_0, ..., e_L]) with ``return_all``."""
    if self.input_mask is not None:
      e = e * jnp.asarray(self.input_mask, e.dtype)
    states = [e]
    for layer in range(self.num_layers):
      e = e + self.layer_increment(e, layer)
      if self.clip is not None:
        e = jnp.clip(e, -self.clip, self.clip)
      states.append(e)
    return (e, states) if return_all else e


def predict(model: ConstructedModel, tokens: jax.Array, state_dim: int) -> jax.Array:
  """ŝ_{t+1} [B, T, N]: the first N dims of the output tokens."""
  return model(tokens)[..., :state_dim]


# ------------------------------------------------------------------------- constructions


def prop1_weights(
  state_dim: int, eta: float, *, num_heads: int = 2, key_size: int = 20, phi_0=None, layout="code"
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One LSA layer doing one GD step on L_t(Φ) from Φ_0 for every t (Prop 1), head 0 only.

  Code layout [0, s_t, s_t, s_{t−1}] (after the 1-layer input mask the first two blocks are
  zero): queries read the second copy of s_t, keys s_{t'−1}, values s_{t'}, and P writes
  η·value into the first block: Δa_t = η Σ_{t'≤t} s_{t'} s_{t'−1}ᵀ s_t (Φ_0 = 0).
  Paper layout [Φ_0 s_t, s_t, s_{t−1}]: values read s_{t'} − Φ_0 s_{t'−1}, so
  a + Δa = (Φ_0 − η∇L_t(Φ_0)) s_t.
  Returns w_q, w_k, w_v [H, D, K] and w_p [H, K, D].
  """
  n = state_dim
  if layout == "code":
    d, q_at, k_at, v_at = 4 * n, 2 * n, 3 * n, 2 * n
  elif layout == "paper":
    d, q_at, k_at, v_at = 3 * n, n, 2 * n, n
  else:
    raise ValueError(f"layout must be 'code' or 'paper'; got {layout!r}")
  if key_size < n:
    raise ValueError(f"key_size must be >= state_dim={n}; got {key_size}")
  eye = jnp.eye(n)
  w_q = jnp.zeros((num_heads, d, key_size)).at[0, q_at : q_at + n, :n].set(eye)
  w_k = jnp.zeros((num_heads, d, key_size)).at[0, k_at : k_at + n, :n].set(eye)
  w_v = jnp.zeros((num_heads, d, key_size)).at[0, v_at : v_at + n, :n].set(eye)
  if phi_0 is not None:
    if layout != "paper":
      raise ValueError("phi_0 needs the paper layout, whose first block holds Φ_0 s_t")
    w_v = w_v.at[0, k_at : k_at + n, :n].set(-jnp.asarray(phi_0).T)
  w_p = jnp.zeros((num_heads, key_size, d)).at[0, :n, :n].set(eta * eye)
  return w_q, w_k, w_v, w_p


def prop2_layer_weights(
  state_dim: int, alpha: float, *, num_heads: int = 4, key_size: int = 20
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """One preconditioning LSA layer of Prop 2 on tokens [x, s_t, s_t, s_{t−1}] (x: the
  iterate in the first block): keys and values read s_{t'−1}, the query reads x, P writes
  −α·value into the first block, so Δx_t = −α S_{t−1} S_{t−1}ᵀ x_t."""
  n, d = state_dim, 4 * state_dim
  eye = jnp.eye(n)
  w_q = jnp.zeros((num_heads, d, key_size)).at[0, :n, :n].set(eye)
  w_k = jnp.zeros((num_heads, d, key_size)).at[0, 3 * n :, :n].set(eye)
  w_v = jnp.zeros((num_heads, d, key_size)).at[0, 3 * n :, :n].set(eye)
  w_p = jnp.zeros((num_heads, key_size, d)).at[0, :n, :n].set(-alpha * eye)
  return w_q, w_k, w_v, w_p

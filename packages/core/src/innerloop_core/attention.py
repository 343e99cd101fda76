"""Multi-head self-attention (linear and softmax) and a small Transformer stack.

Shape notation (used in every docstring below):
    B  batch (tasks or sequences)
    T  tokens per sequence
    D  token width (the residual stream)
    H  heads
    K  key (and query) size per head
    V  value size per head
    N  context tokens (the first N tokens, for ``Mask.CONTEXT_ONLY``)

Weights use the (in, out) layout, so a projection reads ``q = e @ w_q``:
    w_q, w_k: [H, D, K]    w_v: [H, D, V]    w_p: [H, V, D]
``w_p`` projects each head's output back to the residual stream ("P" in von Oswald et al.).

The attention functions return the *increment* Δe; the caller adds it to the residual
stream, so one layer reads ``e <- e + Δe`` exactly as in the papers' equations.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from innerloop_core.config import parse_enum
from innerloop_core.scans import ScanImpl, linear_scan


class Mask(enum.Enum):
  """Which tokens token j may attend to (its keys/values)."""

  # Keys/values are the first `num_context` tokens only; every token (query included)
  # queries them. This is icl-gd's Σ_{i<=N} e_i e_iᵀ: the query never sees itself.
  CONTEXT_ONLY = "context_only"
  # Token j attends to tokens i <= j (the diagonal included).
  CAUSAL = "causal"
  # Every token attends to every token.
  NONE = "none"


class AttentionKind(enum.Enum):
  LINEAR = "linear"  # Σ_i (q_j·k_i) v_i: no softmax, no 1/√K
  SOFTMAX = "softmax"  # Σ_i softmax_i(q_j·k_i / √K) v_i


def _as_enum(value, enum_type, name: str):
  return parse_enum(value, enum_type, name)


def _keys_and_mask(
  e: jax.Array, mask: Mask | str, num_context: int | None
) -> tuple[jax.Array, jax.Array | None]:
  """The tokens that serve as keys/values, and a boolean [T, T_keys] pattern (None = all).

  ``CONTEXT_ONLY`` slices the keys to the first N tokens instead of masking, so the
  linear layer costs O(T·N) and reads like the paper's sum over i <= N.
  """
  mask = _as_enum(mask, Mask, "mask")
  num_tokens = e.shape[-2]
  if mask is Mask.CONTEXT_ONLY:
    if num_context is None:
      raise ValueError("num_context is required with mask=Mask.CONTEXT_ONLY")
    if not 1 <= num_context <= num_tokens:
      raise ValueError(f"num_context must be in [1, T={num_tokens}]; got {num_context}")
    return e[..., :num_context, :], None
  if num_context is not None:
    raise ValueError(f"num_context applies only to mask=Mask.CONTEXT_ONLY; got it with {mask}")
  if mask is Mask.CAUSAL:
    return e, jnp.tril(jnp.ones((num_tokens, num_tokens), dtype=bool))
  return e, None


def _check_weights(e, w_q, w_k, w_v, w_p) -> None:
  if e.ndim != 3:
    raise ValueError(f"e must have shape [B, T, D]; got {e.shape}")
  h, d, k = w_q.shape
  if w_k.shape != (h, d, k):
    raise ValueError(f"w_k must have the shape of w_q {w_q.shape}; got {w_k.shape}")
  if w_v.shape[:2] != (h, d) or w_p.shape != (h, w_v.shape[2], d):
    raise ValueError(
      f"w_v must be [H, D, V] and w_p [H, V, D] for H={h}, D={d}; got {w_v.shape}, {w_p.shape}"
    )
  if e.shape[-1] != d:
    raise ValueError(f"e's token width {e.shape[-1]} does not match the weights' D={d}")


def _project(e, w_q, w_k, w_v, w_p, mask, num_context):
  """Per-head queries [B,H,T,K] of every token, keys [B,H,Tk,K] and values [B,H,Tk,V] of the
  key tokens, and the [T, Tk] pattern of allowed pairs (None: all)."""
  _check_weights(e, w_q, w_k, w_v, w_p)
  keys_src, pattern = _keys_and_mask(e, mask, num_context)
  q = jnp.einsum("btd,hdk->bhtk", e, w_q)
  k = jnp.einsum("bid,hdk->bhik", keys_src, w_k)
  v = jnp.einsum("bid,hdv->bhiv", keys_src, w_v)
  return q, k, v, pattern


def _attend(scores: jax.Array, values: jax.Array, w_p: jax.Array) -> jax.Array:
  """Σ_h Σ_i scores[h, j, i] v_i W_p,h.  scores: [B,H,T,Tk], values: [B,H,Tk,V] -> [B,T,D]."""
  heads = jnp.einsum("bhti,bhiv->bhtv", scores, values)
  return jnp.einsum("bhtv,hvd->btd", heads, w_p)


def linear_attention(
  e: jax.Array,
  w_q: jax.Array,
  w_k: jax.Array,
  w_v: jax.Array,
  w_p: jax.Array,
  *,
  mask: Mask | str,
  num_context: int | None = None,
) -> jax.Array:
  """Linear self-attention increment.

  Δe_j = Σ_h Σ_{i ∈ keys(j)} (e_j W_q,h · e_i W_k,h) (e_i W_v,h) W_p,h

  Args:
    e: tokens [B, T, D].
    w_q, w_k: [H, D, K]; w_v: [H, D, V]; w_p: [H, V, D].
    mask: which tokens are keys of token j (see ``Mask``).
    num_context: N, required for ``Mask.CONTEXT_ONLY``.
  Returns:
    Δe [B, T, D].
  """
  q, k, v, pattern = _project(e, w_q, w_k, w_v, w_p, mask, num_context)
  scores = jnp.einsum("bhtk,bhik->bhti", q, k)
  if pattern is not None:
    scores = jnp.where(pattern, scores, 0.0)
  return _attend(scores, v, w_p)


def softmax_attention(
  e: jax.Array,
  w_q: jax.Array,
  w_k: jax.Array,
  w_v: jax.Array,
  w_p: jax.Array,
  *,
  mask: Mask | str,
  num_context: int | None = None,
) -> jax.Array:
  """Softmax self-attention increment.

  Δe_j = Σ_h Σ_{i ∈ keys(j)} softmax_i(e_j W_q,h · e_i W_k,h / √K) (e_i W_v,h) W_p,h

  Shapes and arguments as in ``linear_attention``; masked logits are -inf.
  """
  q, k, v, pattern = _project(e, w_q, w_k, w_v, w_p, mask, num_context)
  logits = jnp.einsum("bhtk,bhik->bhti", q, k) / math.sqrt(w_q.shape[-1])
  if pattern is not None:
    logits = jnp.where(pattern, logits, -jnp.inf)
  return _attend(jax.nn.softmax(logits, axis=-1), v, w_p)


def linear_attention_from_products(
  e: jax.Array,
  m_kq: jax.Array,
  m_pv: jax.Array,
  *,
  mask: Mask | str,
  num_context: int | None = None,
) -> jax.Array:
  """Linear self-attention written with the per-head weight products.

  Δe_j = Σ_h Σ_{i ∈ keys(j)} (e_j M_kq,h e_iᵀ) e_i M_pv,h

  with M_kq = W_q W_kᵀ (so e_j M_kq e_iᵀ = q_j·k_i) and M_pv = W_v W_p. Used to evaluate
  rescaled or interpolated weights, which need not factor back into (W_q, W_k, W_v, W_p).

  Args:
    e: tokens [B, T, D].
    m_kq, m_pv: [H, D, D].
  Returns:
    Δe [B, T, D].
  """
  if e.ndim != 3:
    raise ValueError(f"e must have shape [B, T, D]; got {e.shape}")
  d = e.shape[-1]
  if m_kq.ndim != 3 or m_kq.shape[1:] != (d, d) or m_pv.shape != m_kq.shape:
    raise ValueError(f"m_kq and m_pv must both be [H, {d}, {d}]; got {m_kq.shape}, {m_pv.shape}")
  keys_src, pattern = _keys_and_mask(e, mask, num_context)
  scores = jnp.einsum("btd,hde,bie->bhti", e, m_kq, keys_src)
  if pattern is not None:
    scores = jnp.where(pattern, scores, 0.0)
  return jnp.einsum("bhti,bid,hde->bte", scores, keys_src, m_pv)


def causal_linear_attention_recurrent(
  e: jax.Array,
  w_q: jax.Array,
  w_k: jax.Array,
  w_v: jax.Array,
  w_p: jax.Array,
  *,
  impl: ScanImpl | str = ScanImpl.AUTO,
) -> jax.Array:
  """Causal linear self-attention as the linear recurrence it is.

  M_t,h = M_{t-1},h + v_t,h k_t,hᵀ (M_0 = 0),   Δe_t = Σ_h (M_t,h q_t,h) W_p,h

  Equal to ``linear_attention(..., mask=Mask.CAUSAL)`` up to reassociation, in O(T·V·K)
  memory per head instead of the [T, T] score matrix.

  Args:
    e: tokens [B, T, D].
    w_q, w_k: [H, D, K]; w_v: [H, D, V]; w_p: [H, V, D].
    impl: how the accumulation over t is scanned (``scans.ScanImpl``).
  Returns:
    Δe [B, T, D].
  """
  _check_weights(e, w_q, w_k, w_v, w_p)
  q = jnp.einsum("btd,hdk->bthk", e, w_q)
  k = jnp.einsum("btd,hdk->bthk", e, w_k)
  v = jnp.einsum("btd,hdv->bthv", e, w_v)
  outer = jnp.einsum("bthv,bthk->bthvk", v, k)
  memory, _ = linear_scan(jnp.ones_like(outer), outer, impl=impl)  # M_t: [B, T, H, V, K]
  heads = jnp.einsum("bthvk,bthk->bthv", memory, q)
  return jnp.einsum("bthv,hvd->btd", heads, w_p)


def _variance_scaling(key, shape, scale, in_axis, batch_axis=()):
  init = jax.nn.initializers.variance_scaling(
    scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=-1, batch_axis=batch_axis
  )
  return init(key, shape, jnp.float32)


class SelfAttention(nnx.Module):
  """Multi-head self-attention returning the increment Δe [B, T, D].

  Init: truncated-normal fan-in with variance ``init_scale / fan_in``. The fan-in is the
  one of a fused projection, D for W_q/W_k/W_v (heads act as a batch axis) and H·V for W_p,
  so ``init_scale`` means the same as for a plain dense layer.
  """

  def __init__(
    self,
    dim: int,
    num_heads: int,
    key_size: int,
    *,
    kind: AttentionKind | str,
    key: jax.Array,
    init_scale: float = 1.0,
    value_size: int | None = None,
  ):
    self.kind = _as_enum(kind, AttentionKind, "kind")
    value_size = key_size if value_size is None else value_size
    kq, kk, kv, kp = jax.random.split(key, 4)
    h, d, k, v = num_heads, dim, key_size, value_size
    self.w_q = nnx.Param(_variance_scaling(kq, (h, d, k), init_scale, in_axis=1, batch_axis=0))
    self.w_k = nnx.Param(_variance_scaling(kk, (h, d, k), init_scale, in_axis=1, batch_axis=0))
    self.w_v = nnx.Param(_variance_scaling(kv, (h, d, v), init_scale, in_axis=1, batch_axis=0))
    self.w_p = nnx.Param(_variance_scaling(kp, (h, v, d), init_scale, in_axis=(0, 1)))

  def __call__(
    self, e: jax.Array, *, mask: Mask | str, num_context: int | None = None
  ) -> jax.Array:
    """e: [B, T, D] -> Δe [B, T, D]."""
    attend = linear_attention if self.kind is AttentionKind.LINEAR else softmax_attention
    return attend(
      e,
      self.w_q[...],
      self.w_k[...],
      self.w_v[...],
      self.w_p[...],
      mask=mask,
      num_context=num_context,
    )


class MLP(nnx.Module):
  """Two-layer perceptron with GELU and biases: [..., D] -> [..., D] (an increment)."""

  def __init__(self, dim: int, hidden: int, *, key: jax.Array, init_scale: float = 1.0):
    k1, k2 = jax.random.split(key)
    self.w_1 = nnx.Param(_variance_scaling(k1, (dim, hidden), init_scale, in_axis=0))
    self.b_1 = nnx.Param(jnp.zeros((hidden,), jnp.float32))
    self.w_2 = nnx.Param(_variance_scaling(k2, (hidden, dim), init_scale, in_axis=0))
    self.b_2 = nnx.Param(jnp.zeros((dim,), jnp.float32))

  def __call__(self, e: jax.Array) -> jax.Array:
    # jax.nn.gelu's default tanh approximation, as Haiku/Flax models use.
    return jax.nn.gelu(e @ self.w_1[...] + self.b_1[...]) @ self.w_2[...] + self.b_2[...]


class LayerNorm(nnx.Module):
  """Layer norm over the token width with learned scale and bias: [..., D] -> [..., D]."""

  def __init__(self, dim: int, *, eps: float = 1e-5):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

  def __call__(self, e: jax.Array) -> jax.Array:
    mean = e.mean(-1, keepdims=True)
    var = ((e - mean) ** 2).mean(-1, keepdims=True)
    return (e - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class Block(nnx.Module):
  """One layer: e <- e + λ·SA(LN(e)), then (optionally) e <- e + λ·MLP(LN(e))."""

  def __init__(
    self,
    dim: int,
    num_heads: int,
    key_size: int,
    *,
    kind: AttentionKind,
    key: jax.Array,
    mlp_hidden: int | None,
    layer_norm: bool,
    init_scale: float,
  ):
    k_attn, k_mlp = jax.random.split(key)
    self.attention = SelfAttention(
      dim, num_heads, key_size, kind=kind, key=k_attn, init_scale=init_scale
    )
    self.mlp = (
      None if mlp_hidden is None else MLP(dim, mlp_hidden, key=k_mlp, init_scale=init_scale)
    )
    self.attention_norm = LayerNorm(dim) if layer_norm else None
    self.mlp_norm = LayerNorm(dim) if (layer_norm and mlp_hidden is not None) else None

  def __call__(self, e, *, mask, num_context=None, residual_scale: float = 1.0) -> jax.Array:
    """e: [B, T, D] -> [B, T, D]."""
    h = e if self.attention_norm is None else self.attention_norm(e)
    e = e + residual_scale * self.attention(h, mask=mask, num_context=num_context)
    if self.mlp is not None:
      h = e if self.mlp_norm is None else self.mlp_norm(e)
      e = e + residual_scale * self.mlp(h)
    return e


class Transformer(nnx.Module):
  """A stack of ``Block``s acting on tokens [B, T, D]; no embedding and no readout.

  ``tied=True`` keeps one weight set and applies it ``num_layers`` times (a "recurrent"
  Transformer); then ``num_layers`` can be overridden at call time for longer roll-outs.
  """

  def __init__(
    self,
    *,
    dim: int,
    num_layers: int,
    num_heads: int,
    key_size: int,
    attention: AttentionKind | str | Sequence[AttentionKind | str],
    tied: bool,
    key: jax.Array,
    mlp_hidden: int | None = None,
    layer_norm: bool = False,
    token_clip: float | None = None,
    init_scale: float = 1.0,
  ):
    if num_layers < 1:
      raise ValueError(f"num_layers must be >= 1; got {num_layers}")
    if isinstance(attention, (AttentionKind, str)):
      kinds = [_as_enum(attention, AttentionKind, "attention")] * num_layers
    else:
      kinds = [_as_enum(a, AttentionKind, "attention") for a in attention]
      if len(kinds) != num_layers:
        raise ValueError(f"attention must give one kind per layer ({num_layers}); got {len(kinds)}")
    if tied and len(set(kinds)) > 1:
      raise ValueError(
        f"a tied Transformer applies one layer repeatedly; attention kinds differ: {kinds}"
      )
    if token_clip is not None and token_clip <= 0:
      raise ValueError(f"token_clip must be positive or None; got {token_clip}")
    self.num_layers = num_layers
    self.tied = tied
    self.token_clip = token_clip
    num_weight_sets = 1 if tied else num_layers
    keys = jax.random.split(key, num_weight_sets)
    self.blocks = nnx.List(
      [
        Block(
          dim,
          num_heads,
          key_size,
          kind=kinds[i],
          key=keys[i],
          mlp_hidden=mlp_hidden,
          layer_norm=layer_norm,
          init_scale=init_scale,
        )
        for i in range(num_weight_sets)
      ]
    )

  def __call__(
    self,
    e: jax.Array,
    *,
    mask: Mask | str,
    num_context: int | None = None,
    num_layers: int | None = None,
    residual_scale: float = 1.0,
    return_all: bool = False,
  ) -> jax.Array | tuple[jax.Array, list[jax.Array]]:
    """Run the stack.

    Args:
      e: tokens [B, T, D].
      mask, num_context: see ``Mask``.
      num_layers: depth override; any depth for a tied stack, at most the built depth
        for an untied one (it then runs the first ``num_layers`` layers).
      residual_scale: dampening λ, e <- e + λ·Δe in every sublayer.
      return_all: also return the token states [e_0 (the input), e_1, ..., e_L].
    Returns:
      e_L [B, T, D], or (e_L, states) with ``return_all``.
    """
    depth = self.num_layers if num_layers is None else num_layers
    if depth < 1 or (not self.tied and depth > self.num_layers):
      limit = "any depth >= 1" if self.tied else f"1..{self.num_layers}"
      raise ValueError(f"num_layers must be {limit}; got {num_layers}")
    states = [e]
    for layer in range(depth):
      block = self.blocks[0 if self.tied else layer]
      e = block(e, mask=mask, num_context=num_context, residual_scale=residual_scale)
      if self.token_clip is not None:
        # Keeps deep untrained stacks finite (icl-gd clips to ±10 for > 3 layers).
        e = jnp.clip(e, -self.token_clip, self.token_clip)
      states.append(e)
    return (e, states) if return_all else e

"""Multi-head self-attention (linear and softmax) and a small Transformer stack.

Shape notation (used in every docstring below):
    B  batch (tasks or sequences)
    T  tokens per sequence
    D  token width (the residual stream)
    H  heads
    K  key (and query) size per head
    V  value size per head
    N  context tokens (the first N tokens, for ``Mask.CONTEXT_ONLY``)
    P  extra query/key features (a positional encoding), 0 when absent

Weights use the (in, out) layout, so a projection reads ``q = e @ w_q``:
    w_q, w_k: [H, D + P, K]    w_v: [H, D, V]    w_p: [H, V, D]
``w_p`` projects each head's output back to the residual stream ("P" in von Oswald et al.).
Queries and keys read ``[e, qk_features]`` when features are given (von Oswald et al. 2023
concatenate a sinusoidal positional encoding to the first layer's query/key inputs only, so
it never enters the residual stream); values always read e alone.

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
from innerloop_core.mesa import MesaImpl, mesa_layer, with_features
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
  # V_j K_jᵀ (K_j K_jᵀ + I/λ)⁻¹ q_j: a per-head ridge regression over tokens i <= j
  # (``mesa.mesa_layer``); causal by construction.
  MESA = "mesa"


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


def _check_weights(e, w_q, w_k, w_v, w_p, qk_width=None) -> None:
  """Shapes of e [B, T, D] and the weights; `qk_width` is D + P (None: D)."""
  if e.ndim != 3:
    raise ValueError(f"e must have shape [B, T, D]; got {e.shape}")
  h, d_qk, k = w_q.shape
  d = w_v.shape[1] if w_v.ndim == 3 else d_qk
  if w_k.shape != (h, d_qk, k):
    raise ValueError(f"w_k must have the shape of w_q {w_q.shape}; got {w_k.shape}")
  if w_v.shape[:2] != (h, d) or w_p.shape != (h, w_v.shape[2], d):
    raise ValueError(
      f"w_v must be [H, D, V] and w_p [H, V, D] for H={h}, D={d}; got {w_v.shape}, {w_p.shape}"
    )
  if e.shape[-1] != d:
    raise ValueError(f"e's token width {e.shape[-1]} does not match the weights' D={d}")
  if (e.shape[-1] if qk_width is None else qk_width) != d_qk:
    raise ValueError(
      f"w_q/w_k's input width {d_qk} must be D + P = {qk_width or e.shape[-1]} (token width"
      f" {e.shape[-1]} plus qk_features)"
    )


def _project(e, w_q, w_k, w_v, w_p, mask, num_context, qk_features=None):
  """Per-head queries [B,H,T,K] of every token, keys [B,H,Tk,K] and values [B,H,Tk,V] of the
  key tokens, and the [T, Tk] pattern of allowed pairs (None: all)."""
  qk_src = with_features(e, qk_features)
  _check_weights(e, w_q, w_k, w_v, w_p, qk_src.shape[-1])
  keys_src, pattern = _keys_and_mask(e, mask, num_context)
  qk_keys_src = qk_src[:, : keys_src.shape[1]]  # the key tokens are a prefix of the tokens
  q = jnp.einsum("btd,hdk->bhtk", qk_src, w_q)
  k = jnp.einsum("bid,hdk->bhik", qk_keys_src, w_k)
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
  qk_features: jax.Array | None = None,
) -> jax.Array:
  """Linear self-attention increment.

  Δe_j = Σ_h Σ_{i ∈ keys(j)} (e_j W_q,h · e_i W_k,h) (e_i W_v,h) W_p,h

  Args:
    e: tokens [B, T, D].
    w_q, w_k: [H, D + P, K]; w_v: [H, D, V]; w_p: [H, V, D].
    mask: which tokens are keys of token j (see ``Mask``).
    num_context: N, required for ``Mask.CONTEXT_ONLY``.
    qk_features: [T, P] or [B, T, P] features concatenated to e for queries and keys
      (e.g. ``sinusoidal_encoding``), or None (P = 0).
  Returns:
    Δe [B, T, D].
  """
  q, k, v, pattern = _project(e, w_q, w_k, w_v, w_p, mask, num_context, qk_features)
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
  qk_features: jax.Array | None = None,
) -> jax.Array:
  """Softmax self-attention increment.

  Δe_j = Σ_h Σ_{i ∈ keys(j)} softmax_i(e_j W_q,h · e_i W_k,h / √K) (e_i W_v,h) W_p,h

  Shapes and arguments as in ``linear_attention``; masked logits are -inf.
  """
  q, k, v, pattern = _project(e, w_q, w_k, w_v, w_p, mask, num_context, qk_features)
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


def sinusoidal_encoding(num_tokens: int, dim: int, dtype=jnp.float32) -> jax.Array:
  """Sinusoidal positional encoding [T, P] (Vaswani et al. 2017), positions t = 0..T−1:

  pe[t, 2i] = sin(t ω_i),  pe[t, 2i + 1] = cos(t ω_i),  ω_i = 10000^(−2i/P).

  An odd P keeps the last sine column and drops its cosine.
  """
  if dim < 1:
    raise ValueError(f"the positional-encoding dim must be >= 1; got {dim}")
  pairs = -(-dim // 2)
  freqs = jnp.exp(-math.log(10000.0) * 2.0 * jnp.arange(pairs) / dim)
  angles = jnp.arange(num_tokens)[:, None] * freqs[None, :]
  pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(num_tokens, 2 * pairs)
  return pe[:, :dim].astype(dtype)


def _variance_scaling(key, shape, scale, in_axis, batch_axis=()):
  init = jax.nn.initializers.variance_scaling(
    scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=-1, batch_axis=batch_axis
  )
  return init(key, shape, jnp.float32)


# Initial forget-gate bias of a mesa layer: σ(3) ≈ 0.95, so an untrained layer starts close
# to plain RLS (γ ≡ 1) and learns how much to forget (our choice; the sheet gives none).
MESA_FORGET_BIAS_INIT = 3.0


class SelfAttention(nnx.Module):
  """Multi-head self-attention returning the increment Δe [B, T, D].

  Init: truncated-normal fan-in with variance ``init_scale / fan_in``. The fan-in is the
  one of a fused projection, D (+ P) for W_q/W_k/W_v (heads act as a batch axis) and H·V for
  W_p, so ``init_scale`` means the same as for a plain dense layer.

  ``pe_dim`` = P > 0 concatenates a sinusoidal encoding [T, P] to the queries' and keys'
  inputs (W_q, W_k: [H, D + P, K]). ``kind=MESA`` adds a per-head λ [H] (init
  ``mesa_lam_init``, no positivity transform) and, with ``mesa_forget``, a forget gate
  γ_t,h = σ(e_t w_γ,h + b_γ,h) (w_γ: [D, H], b_γ: [H] init ``MESA_FORGET_BIAS_INIT``).
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
    pe_dim: int = 0,
    mesa_impl: MesaImpl | str = MesaImpl.AUTO,
    mesa_lam_init: float = 1.0,
    mesa_forget: bool = False,
  ):
    self.kind = _as_enum(kind, AttentionKind, "kind")
    self.mesa_impl = parse_enum(mesa_impl, MesaImpl, "mesa_impl")
    if pe_dim < 0:
      raise ValueError(f"pe_dim must be >= 0; got {pe_dim}")
    self.pe_dim = pe_dim
    value_size = key_size if value_size is None else value_size
    kq, kk, kv, kp = jax.random.split(key, 4)
    h, d, k, v = num_heads, dim, key_size, value_size
    d_qk = d + pe_dim
    self.w_q = nnx.Param(_variance_scaling(kq, (h, d_qk, k), init_scale, in_axis=1, batch_axis=0))
    self.w_k = nnx.Param(_variance_scaling(kk, (h, d_qk, k), init_scale, in_axis=1, batch_axis=0))
    self.w_v = nnx.Param(_variance_scaling(kv, (h, d, v), init_scale, in_axis=1, batch_axis=0))
    self.w_p = nnx.Param(_variance_scaling(kp, (h, v, d), init_scale, in_axis=(0, 1)))
    is_mesa = self.kind is AttentionKind.MESA
    if mesa_forget and not is_mesa:
      raise ValueError(f"mesa_forget applies only to kind={AttentionKind.MESA}; got {self.kind}")
    self.lam = nnx.Param(jnp.full((h,), mesa_lam_init, jnp.float32)) if is_mesa else None
    if mesa_forget:
      # fold_in rather than a 5-way split keeps W_q..W_p identical to a layer without a gate.
      k_gate = jax.random.fold_in(key, 4)
      self.w_gamma = nnx.Param(_variance_scaling(k_gate, (d, h), init_scale, in_axis=0))
      self.b_gamma = nnx.Param(jnp.full((h,), MESA_FORGET_BIAS_INIT, jnp.float32))
    else:
      self.w_gamma = self.b_gamma = None

  def forget_factors(self, e: jax.Array) -> jax.Array | None:
    """γ [B, H, T] = σ(e w_γ + b_γ) of a gated mesa layer; None without a gate."""
    if self.w_gamma is None:
      return None
    return jnp.swapaxes(jax.nn.sigmoid(e @ self.w_gamma[...] + self.b_gamma[...]), 1, 2)

  def __call__(
    self, e: jax.Array, *, mask: Mask | str, num_context: int | None = None
  ) -> jax.Array:
    """e: [B, T, D] -> Δe [B, T, D]."""
    pe = sinusoidal_encoding(e.shape[1], self.pe_dim, e.dtype) if self.pe_dim else None
    weights = (self.w_q[...], self.w_k[...], self.w_v[...], self.w_p[...])
    if self.kind is AttentionKind.MESA:
      mask = _as_enum(mask, Mask, "mask")
      if mask is not Mask.CAUSAL or num_context is not None:
        raise ValueError(f"a mesa layer is causal: it needs mask={Mask.CAUSAL}; got {mask}")
      return mesa_layer(
        e,
        *weights,
        self.lam[...],
        gamma=self.forget_factors(e),
        impl=self.mesa_impl,
        qk_features=pe,
      )
    attend = linear_attention if self.kind is AttentionKind.LINEAR else softmax_attention
    return attend(e, *weights, mask=mask, num_context=num_context, qk_features=pe)


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
    **attention_options,
  ):
    """``attention_options``: pe_dim, mesa_impl, mesa_lam_init, mesa_forget of
    ``SelfAttention``."""
    k_attn, k_mlp = jax.random.split(key)
    self.attention = SelfAttention(
      dim, num_heads, key_size, kind=kind, key=k_attn, init_scale=init_scale, **attention_options
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
  """A stack of ``Block``s acting on tokens [B, T, D].

  ``tied=True`` keeps one weight set and applies it ``num_layers`` times (a "recurrent"
  Transformer); then ``num_layers`` can be overridden at call time for longer roll-outs.

  Options for von Oswald et al. (2023)'s models, all off by default:
    ``input_dim``/``output_dim``: bias-free linear embedding [I, D] and readout [D, O]; the
      stack then maps inputs [B, T, I] to outputs [B, T, O].
    ``pe_dim``: P > 0 gives the *first* layer a sinusoidal encoding concatenated to its
      query/key inputs (never added to the residual stream).
    ``attention="mesa"`` (or a list such as ``["softmax", "mesa"]``) builds mesa layers,
      with ``mesa_impl``, ``mesa_lam_init`` and ``mesa_forget`` as in ``SelfAttention``.
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
    pe_dim: int = 0,
    input_dim: int | None = None,
    output_dim: int | None = None,
    mesa_impl: MesaImpl | str = MesaImpl.AUTO,
    mesa_lam_init: float = 1.0,
    mesa_forget: bool = False,
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
    if tied and pe_dim:
      raise ValueError(f"pe_dim goes to the first layer only, so it needs tied=False; got {pe_dim}")
    if mesa_forget and AttentionKind.MESA not in kinds:
      raise ValueError("mesa_forget needs at least one layer of attention kind 'mesa'")
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
          pe_dim=pe_dim if i == 0 else 0,
          mesa_impl=mesa_impl,
          mesa_lam_init=mesa_lam_init,
          mesa_forget=mesa_forget and kinds[i] is AttentionKind.MESA,
        )
        for i in range(num_weight_sets)
      ]
    )
    # Own fold_in keys, so that the blocks' weights are those of a stack without them.
    if input_dim is not None:
      k_in = jax.random.fold_in(key, 1_000_001)
      self.embed = nnx.Param(_variance_scaling(k_in, (input_dim, dim), init_scale, in_axis=0))
    else:
      self.embed = None
    if output_dim is not None:
      k_out = jax.random.fold_in(key, 1_000_002)
      self.readout = nnx.Param(_variance_scaling(k_out, (dim, output_dim), init_scale, in_axis=0))
    else:
      self.readout = None

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
      e: tokens [B, T, D], or inputs [B, T, I] with ``input_dim``.
      mask, num_context: see ``Mask``.
      num_layers: depth override; any depth for a tied stack, at most the built depth
        for an untied one (it then runs the first ``num_layers`` layers).
      residual_scale: dampening λ, e <- e + λ·Δe in every sublayer.
      return_all: also return the token states [e_0 (the input), e_1, ..., e_L].
    Returns:
      e_L [B, T, D] (outputs [B, T, O] with ``output_dim``), or (that, states) with
      ``return_all``; the states are always residual-stream tokens [B, T, D].
    """
    depth = self.num_layers if num_layers is None else num_layers
    if depth < 1 or (not self.tied and depth > self.num_layers):
      limit = "any depth >= 1" if self.tied else f"1..{self.num_layers}"
      raise ValueError(f"num_layers must be {limit}; got {num_layers}")
    if self.embed is not None:
      e = e @ self.embed[...]
    states = [e]
    for layer in range(depth):
      block = self.blocks[0 if self.tied else layer]
      e = block(e, mask=mask, num_context=num_context, residual_scale=residual_scale)
      if self.token_clip is not None:
        # Keeps deep untrained stacks finite (icl-gd clips to ±10 for > 3 layers).
        e = jnp.clip(e, -self.token_clip, self.token_clip)
      states.append(e)
    out = e if self.readout is None else e @ self.readout[...]
    return (out, states) if return_all else out

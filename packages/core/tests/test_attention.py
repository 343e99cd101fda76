"""Tests for innerloop_core.attention against naive per-token loops and stated invariants."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.attention import (
  AttentionKind,
  Mask,
  SelfAttention,
  Transformer,
  linear_attention,
  linear_attention_from_products,
  sinusoidal_encoding,
  softmax_attention,
)

B, T, D, H, K, V, N = 2, 5, 4, 2, 3, 2, 3


def _normal(seed, shape):
  # numpy draws: compiling JAX's RNG for every shape would dominate the test time.
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _key(seed):
  # RBG keys compile several times faster than threefry on CPU.
  return jax.random.key(seed, impl="rbg")


def _random_inputs(seed=0):
  shapes = [(B, T, D), (H, D, K), (H, D, K), (H, D, V), (H, V, D)]
  return tuple(_normal(100 * seed + i, shape) for i, shape in enumerate(shapes))


def _naive(e, w_q, w_k, w_v, w_p, mask, kind, num_context=None):
  """Per task, per token, per head loops in float64."""
  e, w_q, w_k, w_v, w_p = (np.asarray(a, np.float64) for a in (e, w_q, w_k, w_v, w_p))
  out = np.zeros_like(e)
  for b, j, h in itertools.product(range(e.shape[0]), range(e.shape[1]), range(w_q.shape[0])):
    if mask is Mask.CONTEXT_ONLY:
      keys = range(num_context)
    elif mask is Mask.CAUSAL:
      keys = range(j + 1)
    else:
      keys = range(e.shape[1])
    q = e[b, j] @ w_q[h]
    scores = np.array([q @ (e[b, i] @ w_k[h]) for i in keys])
    if kind is AttentionKind.SOFTMAX:
      scores = scores / np.sqrt(w_q.shape[-1])
      scores = np.exp(scores - scores.max())
      scores = scores / scores.sum()
    for s, i in zip(scores, keys, strict=True):
      out[b, j] += s * (e[b, i] @ w_v[h]) @ w_p[h]
  return out


MASK_ARGS = [(Mask.CONTEXT_ONLY, N), (Mask.CAUSAL, None), (Mask.NONE, None)]


@pytest.mark.parametrize("kind", [AttentionKind.LINEAR, AttentionKind.SOFTMAX])
@pytest.mark.parametrize("mask,num_context", MASK_ARGS)
def test_attention_matches_naive_loop(kind, mask, num_context):
  args = _random_inputs()
  attend = linear_attention if kind is AttentionKind.LINEAR else softmax_attention
  got = attend(*args, mask=mask, num_context=num_context)
  want = _naive(*args, mask, kind, num_context)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mask,num_context", MASK_ARGS)
def test_linear_attention_from_products_matches_naive_loop(mask, num_context):
  e, w_q, w_k, w_v, w_p = _random_inputs(1)
  m_kq = jnp.einsum("hdk,hek->hde", w_q, w_k)  # q_j·k_i = e_j m_kq e_iᵀ
  m_pv = jnp.einsum("hdv,hve->hde", w_v, w_p)
  got = linear_attention_from_products(e, m_kq, m_pv, mask=mask, num_context=num_context)
  want = _naive(e, w_q, w_k, w_v, w_p, mask, AttentionKind.LINEAR, num_context)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_mask_accepts_string_values():
  args = _random_inputs()
  np.testing.assert_array_equal(
    linear_attention(*args, mask="causal"), linear_attention(*args, mask=Mask.CAUSAL)
  )


@pytest.mark.parametrize("mask,num_context", MASK_ARGS)
def test_softmax_rows_sum_to_one(mask, num_context):
  # Tokens carry a constant 1 in their last slot; each head's value reads only that
  # slot and W_p writes it to slot 0 with weight 1/H, so Δe[..., 0] = Σ_i a_ji = 1.
  e, w_q, w_k, _, _ = _random_inputs(2)
  e = e.at[..., -1].set(1.0)
  w_v = jnp.zeros((H, D, V)).at[:, D - 1, 0].set(1.0)
  w_p = jnp.zeros((H, V, D)).at[:, 0, 0].set(1.0 / H)
  out = softmax_attention(e, w_q, w_k, w_v, w_p, mask=mask, num_context=num_context)
  np.testing.assert_allclose(out[..., 0], 1.0, rtol=1e-6)
  np.testing.assert_allclose(out[..., 1:], 0.0, atol=1e-7)


def test_context_only_ignores_tokens_after_context():
  args = _random_inputs(3)
  e = args[0]
  e_changed = e.at[:, N:].add(5.0)
  base = linear_attention(*args, mask=Mask.CONTEXT_ONLY, num_context=N)
  changed = linear_attention(e_changed, *args[1:], mask=Mask.CONTEXT_ONLY, num_context=N)
  # Context tokens only see the context; later tokens change only their own query.
  np.testing.assert_allclose(changed[:, :N], base[:, :N], rtol=1e-6)
  assert float(jnp.abs(changed[:, N:] - base[:, N:]).max()) > 1e-2


@pytest.mark.parametrize(
  "kwargs,match",
  [
    (dict(mask="causal_with_diag"), "mask must be one of"),
    (dict(mask=Mask.CONTEXT_ONLY), "num_context is required"),
    (dict(mask=Mask.CONTEXT_ONLY, num_context=T + 1), "num_context must be in"),
    (dict(mask=Mask.CONTEXT_ONLY, num_context=0), "num_context must be in"),
    (dict(mask=Mask.CAUSAL, num_context=2), "num_context applies only"),
  ],
)
@pytest.mark.parametrize("attend", [linear_attention, softmax_attention])
def test_bad_mask_arguments(attend, kwargs, match):
  with pytest.raises(ValueError, match=match):
    attend(*_random_inputs(), **kwargs)


def test_bad_shapes_and_kinds():
  e, w_q, w_k, w_v, w_p = _random_inputs()
  with pytest.raises(ValueError, match="w_k"):
    linear_attention(e, w_q, w_k[:, :, :2], w_v, w_p, mask=Mask.NONE)
  with pytest.raises(ValueError, match="token width"):
    linear_attention(e[..., :3], w_q, w_k, w_v, w_p, mask=Mask.NONE)
  with pytest.raises(ValueError, match="kind must be one of"):
    SelfAttention(D, H, K, kind="cosine", key=_key(0))
  with pytest.raises(ValueError, match="attention must be one of"):
    Transformer(
      dim=D, num_layers=2, num_heads=H, key_size=K, attention="lin", tied=True, key=_key(0)
    )
  with pytest.raises(ValueError, match="one kind per layer"):
    Transformer(
      dim=D,
      num_layers=3,
      num_heads=H,
      key_size=K,
      attention=["linear"] * 2,
      tied=False,
      key=_key(0),
    )
  with pytest.raises(ValueError, match="tied"):
    Transformer(
      dim=D,
      num_layers=2,
      num_heads=H,
      key_size=K,
      attention=["softmax", "linear"],
      tied=True,
      key=_key(0),
    )


def test_self_attention_module_matches_function():
  attn = SelfAttention(D, H, K, value_size=V, kind=AttentionKind.SOFTMAX, key=_key(4))
  e = _normal(5, (B, T, D))
  got = attn(e, mask=Mask.CAUSAL)
  want = softmax_attention(
    e, attn.w_q[...], attn.w_k[...], attn.w_v[...], attn.w_p[...], mask=Mask.CAUSAL
  )
  np.testing.assert_array_equal(got, want)
  assert attn.w_v[...].shape == (H, D, V) and attn.w_p[...].shape == (H, V, D)


def test_init_std_is_fan_in_variance_scaling():
  d, h, k, scale = 64, 8, 32, 0.5
  attn = SelfAttention(d, h, k, kind="linear", key=_key(0), init_scale=scale)
  # Fan-in is D for the input projections (heads are a batch axis) and H·V for W_p.
  for w, fan_in in [(attn.w_q, d), (attn.w_k, d), (attn.w_v, d), (attn.w_p, h * k)]:
    std = float(jnp.std(w[...]))
    assert abs(std / np.sqrt(scale / fan_in) - 1) < 0.05, (std, fan_in)


def _num_params(model) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("mlp_hidden,layer_norm", [(None, False), (16, True)])
def test_tied_vs_untied_parameter_counts(mlp_hidden, layer_norm):
  kwargs = dict(dim=D, num_layers=4, num_heads=H, key_size=K, attention="linear", key=_key(0))
  kwargs.update(mlp_hidden=mlp_hidden, layer_norm=layer_norm)
  per_layer = 4 * H * D * K
  if mlp_hidden is not None:
    per_layer += D * mlp_hidden + mlp_hidden + mlp_hidden * D + D
  if layer_norm:
    per_layer += 2 * D * (2 if mlp_hidden is not None else 1)
  assert _num_params(Transformer(tied=True, **kwargs)) == per_layer
  assert _num_params(Transformer(tied=False, **kwargs)) == 4 * per_layer


def _loop_blocks(model, e, depth, mask, residual_scale=1.0, num_context=None):
  for layer in range(depth):
    block = model.blocks[0 if model.tied else layer]
    attn = block.attention
    h = e if block.attention_norm is None else block.attention_norm(e)
    e = e + residual_scale * attn(h, mask=mask, num_context=num_context)
    if block.mlp is not None:
      h = e if block.mlp_norm is None else block.mlp_norm(e)
      e = e + residual_scale * block.mlp(h)
  return e


@pytest.mark.parametrize("tied", [True, False])
def test_transformer_is_residual_stack(tied):
  model = Transformer(
    dim=D,
    num_layers=3,
    num_heads=H,
    key_size=K,
    attention=["linear", "softmax", "linear"] if not tied else "linear",
    tied=tied,
    mlp_hidden=8,
    layer_norm=True,
    key=_key(1),
  )
  e = _normal(2, (B, T, D))
  graphdef, state = nnx.split(model)

  @jax.jit  # one compiled program instead of op-by-op dispatch
  def both(state, e):
    model = nnx.merge(graphdef, state)
    got = model(e, mask=Mask.CONTEXT_ONLY, num_context=N, residual_scale=0.5, return_all=True)
    return got, _loop_blocks(model, e, 3, Mask.CONTEXT_ONLY, 0.5, N)

  (out, states), want = both(state, e)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  assert len(states) == 4
  np.testing.assert_array_equal(states[0], e)
  np.testing.assert_array_equal(states[-1], out)


def test_tied_depth_override_and_untied_limit():
  model = Transformer(
    dim=D, num_layers=2, num_heads=1, key_size=K, attention="linear", tied=True, key=_key(3)
  )
  e = _normal(4, (B, T, D))
  graphdef, state = nnx.split(model)

  @jax.jit
  def both(state, e):
    model = nnx.merge(graphdef, state)
    return model(e, mask=Mask.CAUSAL, num_layers=5, residual_scale=0.3), _loop_blocks(
      model, e, 5, Mask.CAUSAL, 0.3
    )

  out, want = both(state, e)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  untied = Transformer(
    dim=D, num_layers=2, num_heads=1, key_size=K, attention="linear", tied=False, key=_key(3)
  )
  with pytest.raises(ValueError, match="num_layers must be 1..2"):
    untied(e, mask=Mask.CAUSAL, num_layers=3)


def test_one_damped_layer_is_e_plus_lambda_delta():
  model = Transformer(
    dim=D, num_layers=1, num_heads=H, key_size=K, attention="softmax", tied=True, key=_key(5)
  )
  e = _normal(6, (B, T, D))
  delta = model.blocks[0].attention(e, mask=Mask.NONE)
  np.testing.assert_allclose(
    model(e, mask=Mask.NONE, residual_scale=0.75), e + 0.75 * delta, rtol=1e-6, atol=1e-6
  )


def test_token_clipping_bounds_every_layer():
  kwargs = dict(
    dim=D, num_layers=3, num_heads=H, key_size=K, attention="linear", tied=False, init_scale=4.0
  )
  e = 1.5 * _normal(7, (B, T, D))
  clipped = Transformer(token_clip=2.0, key=_key(8), **kwargs)
  free = Transformer(token_clip=None, key=_key(8), **kwargs)
  _, states = clipped(e, mask=Mask.NONE, return_all=True)
  for s in states[1:]:
    assert float(jnp.abs(s).max()) <= 2.0
  assert float(jnp.abs(free(e, mask=Mask.NONE)).max()) > 2.0  # the bound is not vacuous
  with pytest.raises(ValueError, match="token_clip"):
    Transformer(token_clip=0.0, key=_key(8), **kwargs)


def test_jit_over_split_state():
  model = Transformer(
    dim=D, num_layers=2, num_heads=H, key_size=K, attention="linear", tied=False, key=_key(9)
  )
  graphdef, state = nnx.split(model)
  e = _normal(10, (B, T, D))

  @jax.jit
  def forward(state, e):
    return nnx.merge(graphdef, state)(e, mask=Mask.CONTEXT_ONLY, num_context=N)

  np.testing.assert_allclose(
    forward(state, e), model(e, mask=Mask.CONTEXT_ONLY, num_context=N), rtol=1e-6
  )


def test_transformer_numbers_unchanged_without_the_new_options():
  # Recorded with the code before positional encodings, embeddings and mesa layers were added
  # (threefry key: the same draws on every backend); the default path must reproduce them.
  e = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 4)), jnp.float32)
  model = Transformer(
    dim=4,
    num_layers=2,
    num_heads=2,
    key_size=3,
    attention=["softmax", "linear"],
    tied=False,
    key=jax.random.key(0),
    mlp_hidden=8,
    layer_norm=True,
  )
  out = model(e, mask="causal")
  np.testing.assert_allclose(out[1, -1], [-3.3563266, 0.21671262, 1.6217175, -3.574155], rtol=1e-5)
  np.testing.assert_allclose(float(out.sum()), -23.020713806152344, rtol=1e-5)


def test_sinusoidal_encoding_values():
  pe = sinusoidal_encoding(6, 5)
  assert pe.shape == (6, 5)
  t = np.arange(6)[:, None]
  freqs = 10000.0 ** (-np.arange(3) * 2 / 5)
  np.testing.assert_allclose(pe[:, 0::2], np.sin(t * freqs), atol=1e-6)
  np.testing.assert_allclose(pe[:, 1::2], np.cos(t * freqs[:2]), atol=1e-6)
  with pytest.raises(ValueError, match="dim must be >= 1"):
    sinusoidal_encoding(6, 0)


@pytest.mark.parametrize("kind", ["linear", "softmax", "mesa"])
def test_positional_encoding_reaches_queries_and_keys_only(kind):
  # With the PE rows of W_q/W_k zeroed, a PE layer is the plain layer with the first D rows;
  # with them nonzero, outputs change but W_v/W_p (values, residual) never see the PE.
  p = 6
  attn = SelfAttention(D, H, K, value_size=V, kind=kind, key=_key(20), pe_dim=p)
  assert attn.w_q[...].shape == (H, D + p, K) and attn.w_v[...].shape == (H, D, V)
  e = _normal(21, (B, T, D))
  pe = sinusoidal_encoding(T, p)
  plain = SelfAttention(D, H, K, value_size=V, kind=kind, key=_key(20))
  plain.w_q[...] = attn.w_q[...][:, :D]
  plain.w_k[...] = attn.w_k[...][:, :D]
  plain.w_v[...] = attn.w_v[...]
  plain.w_p[...] = attn.w_p[...]
  with_pe = attn(e, mask=Mask.CAUSAL)
  assert float(jnp.abs(with_pe - plain(e, mask=Mask.CAUSAL)).max()) > 1e-3
  attn.w_q[...] = attn.w_q[...].at[:, D:].set(0.0)
  attn.w_k[...] = attn.w_k[...].at[:, D:].set(0.0)
  np.testing.assert_allclose(attn(e, mask=Mask.CAUSAL), plain(e, mask=Mask.CAUSAL), atol=1e-6)
  if kind != "mesa":
    attend = linear_attention if kind == "linear" else softmax_attention
    w = (attn.w_q[...], attn.w_k[...], attn.w_v[...], attn.w_p[...])
    batched = jnp.broadcast_to(pe, (B, T, p))
    np.testing.assert_array_equal(
      attend(e, *w, mask=Mask.CAUSAL, qk_features=pe),
      attend(e, *w, mask=Mask.CAUSAL, qk_features=batched),
    )


def test_positional_encoding_matches_naive_concatenation():
  # q = [e, pe] W_q, k = [e, pe] W_k, v = e W_v: the naive loop on concatenated tokens with
  # W_v, W_p padded by zero rows/columns for the PE slots gives the same Δe on the first D.
  p = 3
  e, _, _, w_v, w_p = _random_inputs(22)
  w_q, w_k = _normal(23, (H, D + p, K)), _normal(24, (H, D + p, K))
  pe = sinusoidal_encoding(T, p)
  wide = jnp.concatenate([e, jnp.broadcast_to(pe, (B, T, p))], axis=-1)
  w_v_wide = jnp.concatenate([w_v, jnp.zeros((H, p, V))], axis=1)
  w_p_wide = jnp.concatenate([w_p, jnp.zeros((H, V, p))], axis=2)
  for kind, attend in [(AttentionKind.LINEAR, linear_attention), (AttentionKind.SOFTMAX, softmax_attention)]:  # fmt: skip
    got = attend(e, w_q, w_k, w_v, w_p, mask=Mask.CAUSAL, qk_features=pe)
    want = _naive(wide, w_q, w_k, w_v_wide, w_p_wide, Mask.CAUSAL, kind)[..., :D]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)

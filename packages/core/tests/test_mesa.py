"""Tests for innerloop_core.mesa: every implementation against a direct per-token ridge solve,
the reverse recursion, the custom VJP, the linear-attention limit, causality, and the mesa
kind inside attention.Transformer (sheet mesa-optimization §8 tests 2-5, 8, 9)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.attention import AttentionKind, Mask, SelfAttention, Transformer
from innerloop_core.config import ConfigError
from innerloop_core.mesa import (
  MesaImpl,
  mesa_attention,
  mesa_layer,
  rls_downdate,
  rls_queries,
  rls_update,
)
from innerloop_core.testing import relative_error

B, H, T, K, V = 2, 2, 8, 3, 2
IMPLS = [MesaImpl.SCAN, MesaImpl.SCAN_REVERSE, MesaImpl.GRAM_SOLVE, MesaImpl.AUTO]
DTYPES = [np.float32, np.float64]
CHUNK = 3  # output-sum chunks of 3 tokens: T = 8 has two full chunks and a padded one

# One compiled program per call signature: op-by-op dispatch of the parallel form would
# compile dozens of small programs and dominate the test time.
_mesa = jax.jit(mesa_attention, static_argnames=("impl", "chunk_size"))


def _inputs(seed=0, key_scale=1.0, with_gamma=False):
  """numpy float64 (q, k, v, λ, γ or None) of the module's sizes."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(B, H, T, K))
  k = key_scale * rng.normal(size=(B, H, T, K))
  v = rng.normal(size=(B, H, T, V))
  lam = rng.uniform(0.5, 2.0, size=H)
  gamma = rng.uniform(0.6, 1.0, size=(B, H, T)) if with_gamma else None
  return q, k, v, lam, gamma


def _cast(dtype, *arrays):
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def _direct_ridge(q, k, v, lam, gamma=None):
  """o_t = V_t W_t K_tᵀ (K_t W_t K_tᵀ + w_0 I/λ)⁻¹ q_t by a solve per (b, h, t) in float64.

  W_t = diag(Π_{t''=t'+1..t} γ_t''), w_0 = Π_{t''≤t} γ_t'' (all 1 without γ)."""
  out = np.zeros(q.shape[:3] + (v.shape[-1],))
  for b, h, t in itertools.product(*map(range, q.shape[:3])):
    g = np.ones(t + 1) if gamma is None else gamma[b, h, : t + 1]
    weights = np.array([np.prod(g[s + 1 :]) for s in range(t + 1)])
    keys, values = k[b, h, : t + 1].T, v[b, h, : t + 1].T  # [K, t], [V, t]
    gram = (keys * weights) @ keys.T + np.prod(g) * np.eye(q.shape[-1]) / lam[h]
    out[b, h, t] = (values * weights) @ keys.T @ np.linalg.solve(gram, q[b, h, t])
  return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_gamma", [False, True])
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_direct_ridge_solve(impl, with_gamma, dtype):
  # §8 test 2 (and test 5's forget-factor part: the weighted ridge solve); one chunk (64) and
  # CHUNK-token chunks.
  q, k, v, lam, gamma = _inputs(1, with_gamma=with_gamma)
  want = _direct_ridge(q, k, v, lam, gamma)
  chunk = CHUNK if impl is MesaImpl.SCAN else 64
  with jax.enable_x64(dtype == np.float64):
    got = _mesa(
      *_cast(dtype, q, k, v, lam), gamma=_cast(dtype, gamma)[0], impl=impl, chunk_size=chunk
    )
    assert got.dtype == dtype
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_gamma", [False, True])
def test_reverse_recursion_recovers_every_inverse(with_gamma, dtype):
  # §8 test 3: R_T -> R_{T-1} -> ... -> R_0 = λI by rls_downdate, against the forward R_t.
  _, k, _, lam, gamma = _inputs(2, key_scale=0.7, with_gamma=with_gamma)
  with jax.enable_x64(dtype == np.float64):
    k, lam, gamma = _cast(dtype, k, lam, gamma)
    gamma_t = (lambda t: None) if gamma is None else (lambda t: gamma[:, :, t])
    r0 = jnp.broadcast_to(lam[:, None, None] * jnp.eye(K, dtype=dtype), (B, H, K, K))
    forward = [r0]
    for t in range(T):
      forward.append(rls_update(forward[-1], k[:, :, t], gamma_t(t)))
    r = forward[-1]
    tol = 1e-3 if dtype == np.float32 else 1e-8
    for t in range(T, 0, -1):
      r = rls_downdate(r, k[:, :, t - 1], gamma_t(t - 1))
      assert relative_error(r, forward[t - 1]) <= tol, t
    assert relative_error(r, r0) <= tol
    # The forward recursion itself is the inverse of the regularised Gram matrix.
    a_t = jnp.einsum("bhtk,bhtl->bhkl", k, k) + jnp.eye(K, dtype=dtype) / lam[:, None, None]
    if gamma is None:
      assert relative_error(forward[-1], jnp.linalg.inv(a_t)) <= tol


def _grads(impl, q, k, v, lam, gamma, cotangent):
  def loss(q, k, v, lam, gamma):
    out = mesa_attention(q, k, v, lam, gamma=gamma, impl=impl, chunk_size=CHUNK)
    return jnp.sum(cotangent * out)

  argnums = (0, 1, 2, 3) if gamma is None else (0, 1, 2, 3, 4)
  return jax.jit(jax.grad(loss, argnums=argnums))(q, k, v, lam, gamma)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_gamma", [False, True])
@pytest.mark.parametrize("impl", [MesaImpl.SCAN_REVERSE, MesaImpl.GRAM_SOLVE])
def test_gradients_match_autodiff_through_the_scan(impl, with_gamma, dtype):
  # §8 test 4: the custom VJP (and the parallel form) against autodiff through the scan,
  # for q, k, v, λ and γ.
  q, k, v, lam, gamma = _inputs(3, with_gamma=with_gamma)
  cotangent = np.random.default_rng(4).normal(size=(B, H, T, V))
  with jax.enable_x64(dtype == np.float64):
    args = _cast(dtype, q, k, v, lam, gamma, cotangent)
    want = _grads(MesaImpl.SCAN, *args)
    got = _grads(impl, *args)
    tol = 1e-3 if dtype == np.float32 else 1e-8
    for name, g, w in zip(["q", "k", "v", "lam", "gamma"], got, want, strict=False):
      assert g.dtype == dtype and g.shape == w.shape, name
      assert relative_error(g, w) <= tol, (name, relative_error(g, w))


def test_scan_gradient_matches_finite_differences():
  # The reference of the test above is itself checked: central differences in float64.
  q, k, v, lam, gamma = _inputs(5, with_gamma=True)
  cotangent = np.random.default_rng(6).normal(size=(B, H, T, V))
  with jax.enable_x64(True):
    args = _cast(np.float64, q, k, v, lam, gamma, cotangent)
    grads = _grads(MesaImpl.SCAN, *args)

    @jax.jit
    def loss(*xs):
      out = mesa_attention(*xs[:4], gamma=xs[4], impl="scan", chunk_size=CHUNK)
      return jnp.sum(args[-1] * out)

    eps = 1e-6
    for i, index in [(0, (0, 1, 3, 2)), (1, (1, 0, 2, 1)), (3, (1,)), (4, (0, 1, 4))]:
      plus = list(args[:5])
      minus = list(args[:5])
      plus[i] = plus[i].at[index].add(eps)
      minus[i] = minus[i].at[index].add(-eps)
      numeric = (float(loss(*plus)) - float(loss(*minus))) / (2 * eps)
      np.testing.assert_allclose(float(grads[i][index]), numeric, rtol=1e-6, atol=1e-8)


def _causal_lsa(q, k, v):
  scores = np.einsum("bhtk,bhsk->bhts", q, k) * np.tril(np.ones((T, T)))
  return np.einsum("bhts,bhsv->bhtv", scores, v)


@pytest.mark.parametrize("impl", IMPLS)
def test_small_lambda_is_causal_linear_attention(impl):
  # §8 test 5: mesa(λ)/λ -> causal LSA as λ -> 0, with the error shrinking like λ.
  q, k, v, _, _ = _inputs(7, key_scale=0.5)
  want = _causal_lsa(q, k, v)
  with jax.enable_x64(True):
    errors = []
    for lam in (1e-4, 1e-5):
      lam_h = jnp.full((H,), lam)
      got = _mesa(*_cast(np.float64, q, k, v), lam_h, impl=impl) / lam
      errors.append(relative_error(got, want))
  assert errors[0] <= 1e-3, errors
  assert errors[1] <= errors[0] / 5, errors  # first order in λ: the limit is really reached


@pytest.mark.parametrize("impl", IMPLS)
def test_unit_forget_factors_are_plain_rls(impl):
  q, k, v, lam, _ = _inputs(8)
  q, k, v, lam = _cast(np.float32, q, k, v, lam)
  plain = _mesa(q, k, v, lam, impl=impl)
  ones = _mesa(q, k, v, lam, gamma=jnp.ones((B, H, T)), impl=impl)
  np.testing.assert_allclose(ones, plain, rtol=1e-5, atol=1e-6)


def test_identity_projections_give_per_token_ridge_regression():
  # §8 test 8: tokens [0, s_t, s_{t-1}]; keys read s_{t-1}, queries and values s_t, W_p writes
  # the first block: Δa_t = (Σ_{t'<t} s_{t'+1} s_t'ᵀ)(Σ_{t'<t} s_t' s_t'ᵀ + ρI)⁻¹ s_t, ρ = 1/λ.
  n, steps, rho = 3, 10, 0.5
  s = np.random.default_rng(9).uniform(-1, 1, size=(1, steps + 1, n))  # s_0 = 0 below
  s[:, 0] = 0.0
  e = np.concatenate([np.zeros((1, steps, n)), s[:, 1:], s[:, :-1]], axis=-1)  # t = 1..steps
  eye, zero = np.eye(n), np.zeros((n, n))
  w_q = np.concatenate([zero, eye, zero])[None]  # [1, 3n, n]: reads s_t
  w_k = np.concatenate([zero, zero, eye])[None]  # reads s_{t-1}
  w_v = w_q
  w_p = np.concatenate([eye, zero, zero], axis=1)[None]  # [1, n, 3n]: writes the first block
  got = mesa_layer(*_cast(np.float32, e, w_q, w_k, w_v, w_p), jnp.array([1 / rho]), impl="scan")
  want = np.zeros((steps, n))
  for t in range(1, steps + 1):
    x, y = s[0, 1:t], s[0, 2 : t + 1]  # s_1..s_{t-1} and their successors s_2..s_t
    want[t - 1] = (y.T @ x) @ np.linalg.solve(x.T @ x + rho * eye, s[0, t])
  assert relative_error(got[0, :, :n], want) <= 1e-4
  np.testing.assert_array_equal(got[0, :, n:], 0.0)


@pytest.mark.parametrize("with_gamma", [False, True])
@pytest.mark.parametrize("impl", IMPLS)
def test_output_ignores_the_future(impl, with_gamma):
  # §8 test 9: ∂o_t/∂(q, k, v, γ)_s = 0 for every s > t, and ≠ 0 for some s <= t.
  q, k, v, lam, gamma = _cast(np.float32, *_inputs(10, with_gamma=with_gamma))
  inputs = (q, k, v) if gamma is None else (q, k, v, gamma)

  def outputs(*xs):
    gamma = xs[3] if len(xs) > 3 else None
    return mesa_attention(*xs[:3], lam, gamma=gamma, impl=impl, chunk_size=CHUNK)

  jacobians = jax.jit(jax.jacrev(outputs, argnums=tuple(range(len(inputs)))))(*inputs)
  future = np.triu(np.ones((T, T), bool), k=1)  # [t, s]: s > t
  for name, jac in zip("qkvγ", jacobians, strict=False):
    # jac: [B, H, T, V, B, H, T(, K)], output t on axis 2, input s on axis 6.
    per_pair = np.moveaxis(np.abs(np.asarray(jac)), (2, 6), (0, 1)).reshape(T, T, -1).max(-1)
    assert per_pair[future].max() == 0.0, name
    # q_s reaches output s only; keys, values (and γ) reach every later output.
    assert (np.diag(per_pair) if name == "q" else per_pair[~future]).min() > 0.0, name


def test_bad_arguments_name_the_argument():
  q, k, v, lam, gamma = _cast(np.float32, *_inputs(11, with_gamma=True))
  cases = [
    (dict(q=q[0]), "q must have shape"),
    (dict(k=k[..., :2]), "k must have the shape of q"),
    (dict(v=v[:, :, :3]), "v must have shape"),
    (dict(lam=lam[:1]), "lam must have shape"),
    (dict(gamma=gamma[:, 0]), "gamma must have shape"),
  ]
  base = dict(q=q, k=k, v=v, lam=lam, gamma=gamma)
  for change, match in cases:
    with pytest.raises(ValueError, match=match):
      mesa_attention(**{**base, **change})
  with pytest.raises(ConfigError, match="impl must be one of 'scan', 'scan_reverse'"):
    mesa_attention(q, k, v, lam, impl="cholesky")
  with pytest.raises(ConfigError, match="impl must be one of"):
    rls_queries(q, k, lam, impl="neumann")
  e = q[:, 0]  # [B, T, K] as tokens of width K
  w = jnp.ones((H, K, K))
  with pytest.raises(ValueError, match="w_v must be"):
    mesa_layer(e, w, w, jnp.ones((H, K + 1, V)), jnp.ones((H, V, K)), lam)
  with pytest.raises(ValueError, match="input width"):
    mesa_layer(e, w, w, w, w, lam, qk_features=jnp.ones((T, 2)))


# -------------------------------------------------------------------------------------------
# The mesa kind inside attention.SelfAttention / Transformer
# -------------------------------------------------------------------------------------------


def _key(seed):
  return jax.random.key(seed, impl="rbg")


@pytest.mark.parametrize("forget", [False, True])
def test_self_attention_mesa_matches_the_function(forget):
  d = 5
  attn = SelfAttention(
    d, H, K, kind="mesa", key=_key(0), value_size=V, mesa_forget=forget, mesa_impl="scan"
  )
  e = jnp.asarray(np.random.default_rng(12).normal(size=(B, T, d)), jnp.float32)
  np.testing.assert_array_equal(attn.lam[...], np.ones(H))  # λ init 1
  gamma = attn.forget_factors(e)
  if forget:
    assert gamma.shape == (B, H, T) and float(gamma.min()) > 0.5  # starts near plain RLS
  else:
    assert gamma is None
  graphdef, state = nnx.split(attn)

  @jax.jit
  def both(state, e):
    attn = nnx.merge(graphdef, state)
    weights = (attn.w_q[...], attn.w_k[...], attn.w_v[...], attn.w_p[...], attn.lam[...])
    want = mesa_layer(e, *weights, gamma=attn.forget_factors(e), impl="scan")
    return attn(e, mask=Mask.CAUSAL), want

  got, want = both(state, e)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="mesa layer is causal"):
    attn(e, mask=Mask.NONE)
  with pytest.raises(ValueError, match="mesa_forget applies only"):
    SelfAttention(d, H, K, kind="softmax", key=_key(0), mesa_forget=True)
  with pytest.raises(ConfigError, match="mesa_impl must be one of"):
    SelfAttention(d, H, K, kind="mesa", key=_key(0), mesa_impl="loop")


def test_hybrid_transformer_shapes_causality_and_gradients():
  # The paper's hybrid: embedding, a softmax block with PE on q/k, a mesa block, readout.
  model = Transformer(
    dim=8,
    num_layers=2,
    num_heads=2,
    key_size=3,
    attention=["softmax", "mesa"],
    tied=False,
    key=_key(13),
    pe_dim=4,
    input_dim=3,
    output_dim=3,
    token_clip=1.0,
    mesa_forget=True,
  )
  assert model.blocks[0].attention.kind is AttentionKind.SOFTMAX
  assert model.blocks[0].attention.w_q[...].shape == (2, 8 + 4, 3)
  assert model.blocks[1].attention.kind is AttentionKind.MESA
  assert model.blocks[1].attention.w_q[...].shape == (2, 8, 3)  # PE: first layer only
  assert model.blocks[1].attention.w_gamma is not None
  x = jnp.asarray(np.random.default_rng(14).normal(size=(B, T, 3)), jnp.float32)
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, x):
    return nnx.merge(graphdef, state)(x, mask=Mask.CAUSAL, return_all=True)

  out, states = run(state, x)
  assert out.shape == (B, T, 3) and len(states) == 3
  assert all(s.shape == (B, T, 8) for s in states)
  np.testing.assert_allclose(states[0], x @ model.embed[...], rtol=1e-6)  # no PE added
  x_changed = x.at[:, 5:].add(3.0)
  out_changed, _ = run(state, x_changed)
  np.testing.assert_array_equal(out_changed[:, :5], out[:, :5])
  assert float(jnp.abs(out_changed[:, 5:] - out[:, 5:]).max()) > 1e-3

  def loss(params):
    y = nnx.merge(graphdef, params)(x, mask=Mask.CAUSAL)
    return jnp.mean(y**2)

  grads = jax.jit(jax.grad(loss))(state)
  lam_grad = grads["blocks"][1]["attention"]["lam"][...]
  assert lam_grad.shape == (2,) and bool(jnp.all(jnp.isfinite(lam_grad)))
  assert float(jnp.abs(lam_grad).max()) > 0  # λ is trained


def test_transformer_option_errors():
  kwargs = dict(dim=4, num_layers=2, num_heads=1, key_size=2, key=_key(0))
  with pytest.raises(ValueError, match="pe_dim goes to the first layer only"):
    Transformer(attention="softmax", tied=True, pe_dim=4, **kwargs)
  with pytest.raises(ValueError, match="mesa_forget needs"):
    Transformer(attention="linear", tied=False, mesa_forget=True, **kwargs)

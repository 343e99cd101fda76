"""Tests for innerloop_tasks.regression (icl-gd fact sheet sections 3.1, 5 row 9, 8 test 8)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_tasks.regression import (
  InputConvention,
  InputDistribution,
  RegressionBatch,
  SineConvention,
  constructed_tokens,
  fixed_task_pool,
  linear_regression_tasks,
  sample_from_pool,
  sine_regression_tasks,
  sinusoidal_positional_encoding,
  standard_tokens,
  xxt_eigenvalue_extremes,
)

KEY_MAKERS = {"typed": jax.random.key, "legacy": jax.random.PRNGKey}


def _np(a):
  return np.asarray(a, dtype=np.float64)


def _wx(batch):
  """W x in float64 for context [B, N, Dy] and query [B, Dy]."""
  w, xc, xq = _np(batch.w), _np(batch.x_context), _np(batch.x_query)
  return np.einsum("bij,bnj->bni", w, xc), np.einsum("bij,bj->bi", w, xq)


# --------------------------------------------------------------------------------
# Sheet section 8, test 8: input second moments and sine phase conventions
# --------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "convention, expected", [(InputConvention.CODE, 1 / 12), (InputConvention.PAPER, 1 / 3)]
)
def test_input_second_moment(convention, expected):
  # 1000 tasks x 10 pairs x 10 dims = 1.1e5 draws of x (incl. queries).
  b = linear_regression_tasks(jax.random.key(0), 1000, 10, 10, convention=convention)
  x = np.concatenate([_np(b.x_context).ravel(), _np(b.x_query).ravel()])
  assert x.size >= 100_000
  assert abs(np.mean(x**2) / expected - 1) < 0.02
  half = 0.5 if convention is InputConvention.CODE else 1.0
  assert np.all(np.abs(x) <= half)
  assert np.max(np.abs(x)) > 0.99 * half


def test_conventions_differ_by_factor_two_in_range():
  code = linear_regression_tasks(jax.random.key(1), 1000, convention="code")
  paper = linear_regression_tasks(jax.random.key(1), 1000, convention="paper")
  np.testing.assert_array_equal(_np(paper.x_context), 2 * _np(code.x_context))
  np.testing.assert_array_equal(_np(paper.w), _np(code.w))


@pytest.fixture(scope="module")
def sine_batches():
  key = jax.random.key(2)
  return {c: sine_regression_tasks(key, 100_000, convention=c) for c in ("code", "paper")}


def test_sine_code_phase_is_function_of_amplitude(sine_batches):
  b = sine_batches["code"]
  a, rho = _np(b.w[:, 0, 0]), _np(b.w[:, 0, 1])
  np.testing.assert_allclose(rho, np.pi * (a - 0.1) / 0.4, rtol=0, atol=1e-6)
  assert a.min() >= 0.1 and a.max() <= 0.5
  assert a.min() < 0.101 and a.max() > 0.499
  assert np.all(np.abs(_np(b.y_context)) <= 0.5 + 1e-6)


def test_sine_paper_phase_independent_of_amplitude(sine_batches):
  b = sine_batches["paper"]
  a, rho = _np(b.w[:, 0, 0]), _np(b.w[:, 0, 1])
  assert abs(np.corrcoef(a, rho)[0, 1]) < 0.02
  assert a.min() >= 0.1 and a.max() <= 5.0 and a.max() > 4.9
  assert rho.min() >= 0.0 and rho.max() <= np.pi and rho.max() > 3.1
  # And the code formula does not hold.
  assert np.max(np.abs(rho - np.pi * (a - 0.1) / 0.4)) > 1.0


@pytest.mark.parametrize("convention", ["code", "paper"])
def test_sine_targets(sine_batches, convention):
  b = sine_batches[convention]
  a, rho = _np(b.w[:, 0, 0]), _np(b.w[:, 0, 1])
  xc, xq = _np(b.x_context), _np(b.x_query)
  assert np.all(np.abs(xc) <= 5) and np.all(np.abs(xq) <= 5)
  np.testing.assert_allclose(
    _np(b.y_context), a[:, None, None] * np.sin(xc + rho[:, None, None]), atol=1e-5
  )
  np.testing.assert_allclose(_np(b.y_query), a[:, None] * np.sin(xq + rho[:, None]), atol=1e-5)


# --------------------------------------------------------------------------------
# Shapes, dtypes, determinism, key kinds, jit
# --------------------------------------------------------------------------------


@pytest.mark.parametrize("key_kind", sorted(KEY_MAKERS))
def test_linear_shapes_dtypes_and_targets(key_kind):
  key = KEY_MAKERS[key_kind](5)
  b = linear_regression_tasks(key, 3, 7, 5, 2)
  assert isinstance(b, RegressionBatch)
  assert b.x_context.shape == (3, 7, 5)
  assert b.y_context.shape == (3, 7, 2)
  assert b.x_query.shape == (3, 5)
  assert b.y_query.shape == (3, 2)
  assert b.w.shape == (3, 2, 5)
  for leaf in b:
    assert leaf.dtype == jnp.float32
  yc, yq = _wx(b)
  np.testing.assert_allclose(_np(b.y_context), yc, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_np(b.y_query), yq, rtol=1e-5, atol=1e-6)
  # The query is a fresh input, not a copy of a context input.
  assert not np.any(np.all(_np(b.x_context) == _np(b.x_query)[:, None, :], axis=-1))


@pytest.mark.parametrize("key_kind", sorted(KEY_MAKERS))
def test_sine_shapes_and_dtypes(key_kind):
  b = sine_regression_tasks(KEY_MAKERS[key_kind](6), 8, 9)
  assert b.x_context.shape == (8, 9, 1) and b.y_context.shape == (8, 9, 1)
  assert b.x_query.shape == (8, 1) and b.y_query.shape == (8, 1)
  assert b.w.shape == (8, 1, 2)
  for leaf in b:
    assert leaf.dtype == jnp.float32


def test_default_shapes_match_paper():
  b = linear_regression_tasks(jax.random.key(0), 8)
  assert b.x_context.shape == (8, 10, 10) and b.y_context.shape == (8, 10, 1)
  assert constructed_tokens(b).shape == (8, 11, 11)
  assert standard_tokens(b).shape == (8, 21, 20)
  assert standard_tokens(b, pe_size=20).shape == (8, 21, 30)


def _all_generators(key):
  return {
    "linear": linear_regression_tasks(key, 8, noisy_labels=2),
    "mixed": linear_regression_tasks(key, 8, distribution="mixed"),
    "sine": sine_regression_tasks(key, 8),
    "pool": sample_from_pool(key, fixed_task_pool(key, 5), 8),
  }


def test_determinism_and_key_sensitivity():
  make = jax.random.key
  first, again, other = _all_generators(make(7)), _all_generators(make(7)), _all_generators(make(8))
  for name in first:
    for f, g, h in zip(first[name], again[name], other[name]):
      np.testing.assert_array_equal(np.asarray(f), np.asarray(g), err_msg=name)
    assert not np.array_equal(np.asarray(first[name].x_context), np.asarray(other[name].x_context))


def test_typed_and_legacy_keys_agree():
  typed = linear_regression_tasks(jax.random.key(9), 8, noisy_labels=2)
  legacy = linear_regression_tasks(jax.random.PRNGKey(9), 8, noisy_labels=2)
  for a, b in zip(typed, legacy):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_matches_eager():
  static = (
    "batch_size",
    "num_context",
    "input_dim",
    "output_dim",
    "convention",
    "distribution",
    "noisy_labels",
  )
  gen = jax.jit(linear_regression_tasks, static_argnames=static)
  kwargs = dict(batch_size=8, convention=InputConvention.PAPER, noisy_labels=2)
  for make in KEY_MAKERS.values():
    key = make(10)
    for x, y in zip(gen(key, **kwargs), linear_regression_tasks(key, **kwargs)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)

  key = jax.random.key(10)
  sine = jax.jit(sine_regression_tasks, static_argnums=(1, 2), static_argnames=("convention",))
  for x, y in zip(
    sine(key, 8, convention="code"), sine_regression_tasks(key, 8, convention="code")
  ):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)

  @jax.jit
  def tokens(k):
    b = linear_regression_tasks(k, 4, 3, 2)
    pool = fixed_task_pool(k, 3, num_context=3, input_dim=2)
    return constructed_tokens(b), standard_tokens(sample_from_pool(k, pool, 4), pe_size=4)

  c, s = tokens(key)
  assert c.shape == (4, 4, 3) and s.shape == (4, 7, 6)

  # vmap over keys (typed and legacy): one batch per key, equal to separate calls.
  for make in KEY_MAKERS.values():
    keys = jax.vmap(make)(jnp.arange(3))
    xs = jax.vmap(lambda k: linear_regression_tasks(k, 8).x_context)(keys)
    np.testing.assert_allclose(
      np.asarray(xs[2]), np.asarray(linear_regression_tasks(make(2), 8).x_context), rtol=1e-6
    )


def test_traced_scales_under_vmap():
  key = jax.random.key(11)
  alphas = jnp.array([0.5, 1.0, 2.0])
  xs = jax.vmap(lambda a: linear_regression_tasks(key, 4, input_scale=a).x_context)(alphas)
  base = _np(linear_regression_tasks(key, 4).x_context)
  for i, a in enumerate([0.5, 1.0, 2.0]):
    np.testing.assert_allclose(_np(xs[i]), a * base, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------
# OOD scaling, noisy labels, mixed distributions
# --------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_input_scale_scales_variance(alpha):
  key = jax.random.key(12)
  base = _np(linear_regression_tasks(key, 1000).x_context)
  scaled = linear_regression_tasks(key, 1000, input_scale=alpha)
  xs = _np(scaled.x_context)
  # Statistically: E[x^2] = alpha^2 / 12 under the code convention (U(-a/2, a/2)).
  assert abs(np.mean(xs**2) / (alpha**2 / 12) - 1) < 0.02
  assert np.max(np.abs(xs)) <= alpha / 2
  # Exactly: same key, inputs multiplied by alpha; targets still W x.
  np.testing.assert_allclose(xs, alpha * base, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(_np(scaled.y_context), _wx(scaled)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 3.0])
def test_target_scale_scales_targets(alpha):
  key = jax.random.key(13)
  base = linear_regression_tasks(key, 1000)
  scaled = linear_regression_tasks(key, 1000, target_scale=alpha)
  np.testing.assert_allclose(_np(scaled.x_context), _np(base.x_context))
  np.testing.assert_allclose(_np(scaled.w), alpha * _np(base.w), rtol=1e-6)
  np.testing.assert_allclose(
    _np(scaled.y_context), alpha * _np(base.y_context), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(_np(scaled.y_query), alpha * _np(base.y_query), rtol=1e-5, atol=1e-6)
  # W ~ N(0, alpha^2): 10^4 entries.
  assert abs(np.std(_np(scaled.w)) / alpha - 1) < 0.03


def test_teacher_weights_are_standard_normal():
  w = _np(linear_regression_tasks(jax.random.key(24), 1000, 10, 10, 8).w).ravel()  # 8e4
  assert abs(np.mean(w)) < 0.02 and abs(np.var(w) - 1) < 0.03
  assert abs(np.mean(w**4) / np.var(w) ** 2 - 3) < 0.15  # Gaussian kurtosis
  assert abs(np.mean(np.abs(w) > 1.96) - 0.05) < 0.005


@pytest.mark.parametrize("k", [0, 1, 3, 10])
def test_noisy_labels_replace_exactly_k(k):
  key = jax.random.key(14)
  clean = linear_regression_tasks(key, 1000)
  noisy = linear_regression_tasks(key, 1000, noisy_labels=k)
  np.testing.assert_array_equal(np.asarray(noisy.x_context), np.asarray(clean.x_context))
  np.testing.assert_array_equal(np.asarray(noisy.w), np.asarray(clean.w))
  np.testing.assert_array_equal(np.asarray(noisy.y_query), np.asarray(clean.y_query))
  yc, _ = _wx(noisy)
  matches = np.all(np.isclose(_np(noisy.y_context), yc, rtol=1e-5, atol=1e-6), axis=-1)  # [B, N]
  assert np.all((~matches).sum(axis=1) == k)
  if 0 < k < 10:
    # Positions vary across tasks (not always the first k).
    assert len({tuple(np.flatnonzero(~m)) for m in matches}) > 1
  if k == 10:
    noise = _np(noisy.y_context).ravel()
    assert abs(np.std(noise) - 1) < 0.05  # N(0, 1), not scaled by W


def test_mixed_distribution_frobenius_norm_and_family_mix():
  alpha = 1.7
  b = linear_regression_tasks(
    jax.random.key(15), 3000, distribution=InputDistribution.MIXED, input_scale=alpha
  )
  x = np.concatenate([_np(b.x_context), _np(b.x_query)[:, None]], axis=1)  # [B, N+1, Dx]
  norms = np.linalg.norm(x.reshape(x.shape[0], -1), axis=1)
  np.testing.assert_allclose(norms, alpha, rtol=1e-5)
  np.testing.assert_allclose(_np(b.y_context), _wx(b)[0], rtol=1e-5, atol=1e-6)
  # Exponential tasks have all-positive samples; normal/Laplace tasks almost never do.
  all_positive = np.all(x > 0, axis=(1, 2))
  assert abs(all_positive.mean() - 1 / 3) < 0.04
  # Laplace vs normal: excess kurtosis per task separates them on average.
  signed = x[~all_positive].reshape(int((~all_positive).sum()), -1)
  kurt = np.mean(signed**4, axis=1) / np.mean(signed**2, axis=1) ** 2
  assert np.mean(kurt > 4.0) > 0.25 and np.mean(kurt < 3.5) > 0.25


# --------------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------------


def test_fixed_pool_and_sampling_with_replacement():
  key = jax.random.key(16)
  pool = fixed_task_pool(key, 4, num_context=5, input_dim=3)
  assert pool.x_context.shape == (4, 5, 3)
  again = fixed_task_pool(key, 4, num_context=5, input_dim=3)
  np.testing.assert_array_equal(np.asarray(pool.w), np.asarray(again.w))
  batch = sample_from_pool(jax.random.key(17), pool, 200)
  assert batch.x_context.shape == (200, 5, 3) and batch.w.shape == (200, 1, 3)
  pool_w = _np(pool.w).reshape(4, -1)
  idx = []
  for i in range(200):
    hit = np.flatnonzero(np.all(pool_w == _np(batch.w[i]).ravel(), axis=1))
    assert hit.size == 1
    j = hit[0]
    idx.append(j)
    np.testing.assert_array_equal(np.asarray(batch.x_context[i]), np.asarray(pool.x_context[j]))
    np.testing.assert_array_equal(np.asarray(batch.y_query[i]), np.asarray(pool.y_query[j]))
  assert set(idx) == {0, 1, 2, 3}  # all pool members used, with repetition


# --------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------


def test_constructed_tokens_layout():
  b = linear_regression_tasks(jax.random.key(18), 3, 4, 5, 2)
  tok = constructed_tokens(b)
  assert tok.shape == (3, 5, 7) and tok.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(tok[:, :4, :5]), np.asarray(b.x_context))
  np.testing.assert_array_equal(np.asarray(tok[:, :4, 5:]), np.asarray(b.y_context))
  np.testing.assert_array_equal(np.asarray(tok[:, 4, :5]), np.asarray(b.x_query))
  np.testing.assert_array_equal(np.asarray(tok[:, 4, 5:]), np.zeros((3, 2)))
  assert np.all(np.abs(np.asarray(b.y_query)) > 0)  # so a leak would be visible


def test_standard_tokens_layout_and_pe():
  n, dx, pe = 3, 4, 6
  b = linear_regression_tasks(jax.random.key(19), 2, n, dx, 1)
  tok = np.asarray(standard_tokens(b, pe_size=pe))
  assert tok.shape == (2, 2 * n + 1, dx + pe) and tok.dtype == np.float32
  data, pos = tok[..., :dx], tok[..., dx:]
  for i in range(n):
    np.testing.assert_array_equal(data[:, 2 * i], np.asarray(b.x_context[:, i]))
    np.testing.assert_array_equal(data[:, 2 * i + 1, : dx - 1], 0.0)
    np.testing.assert_array_equal(data[:, 2 * i + 1, dx - 1], np.asarray(b.y_context[:, i, 0]))
  np.testing.assert_array_equal(data[:, -1], np.asarray(b.x_query))
  expected_pe = np.asarray(sinusoidal_positional_encoding(2 * n + 1, pe))
  np.testing.assert_array_equal(pos, np.broadcast_to(expected_pe, pos.shape))
  # pe_size=0: data part only.
  np.testing.assert_array_equal(np.asarray(standard_tokens(b, pe_size=0)), data)


def test_standard_tokens_output_wider_than_input():
  b = linear_regression_tasks(jax.random.key(20), 2, 2, 2, 3)
  tok = np.asarray(standard_tokens(b, pe_size=0))
  assert tok.shape == (2, 5, 3)
  np.testing.assert_array_equal(tok[:, 0, :2], np.asarray(b.x_context[:, 0]))
  np.testing.assert_array_equal(tok[:, 0, 2], 0.0)
  np.testing.assert_array_equal(tok[:, 1], np.asarray(b.y_context[:, 0]))


def test_sinusoidal_positional_encoding_values():
  pe = np.asarray(sinusoidal_positional_encoding(50, 10), dtype=np.float64)
  assert pe.shape == (50, 10)
  p = np.arange(50)[:, None]
  i = np.arange(5)[None, :]
  angle = p / 10000 ** (2 * i / 10)
  np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-6)
  np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-6)
  np.testing.assert_array_equal(pe[0, 0::2], 0.0)
  np.testing.assert_array_equal(pe[0, 1::2], 1.0)
  assert len({tuple(row) for row in np.round(pe, 6)}) == 50  # positions distinguishable
  assert sinusoidal_positional_encoding(5, 7).shape == (5, 7)


# --------------------------------------------------------------------------------
# Fig 13 eigenvalue extremes (sheet section 5 row 9)
# --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eigen_extremes():
  key = jax.random.key(0)
  return {n: xxt_eigenvalue_extremes(key, 10_000, n) for n in (10, 25, 50)}


@pytest.mark.parametrize("n, ref_min, ref_max", [(25, 0.097, 7.712), (50, 0.666, 10.845)])
def test_fig13_eigenvalue_extremes(eigen_extremes, n, ref_min, ref_max):
  lo, hi = eigen_extremes[n]
  assert abs(hi / ref_max - 1) <= 0.15
  assert abs(lo / ref_min - 1) <= 0.35


def test_fig13_rank_deficient_regime(eigen_extremes):
  lo10, hi10 = eigen_extremes[10]
  assert lo10 < 1e-6  # sheet's check; float32 gives the noise floor (|lo| ~ 1e-7)
  assert abs(hi10 / 4.6 - 1) <= 0.15
  assert lo10 < 1e-4 * eigen_extremes[25][0]


def test_fig13_float64_cross_check():
  # Same definition in float64 numpy: N = d = 10 minimum ~ 1e-10 (the paper's value).
  x = _np(linear_regression_tasks(jax.random.key(21), 10_000, 10, 10).x_context)
  eig = np.linalg.eigvalsh(np.einsum("bni,bnj->bij", x, x))
  assert 0 < eig[:, 0].min() < 1e-6
  lo32, hi32 = xxt_eigenvalue_extremes(jax.random.key(21), 10_000, 10)
  assert abs(hi32 / eig[:, -1].max() - 1) < 0.15


def test_xxt_uses_unnormalised_sum():
  # Paper convention doubles the range => eigenvalues scale by 4; N doubling ~doubles max.
  key = jax.random.key(22)
  _, hi_code = xxt_eigenvalue_extremes(key, 10_000, 25)
  _, hi_paper = xxt_eigenvalue_extremes(key, 10_000, 25, convention="paper")
  assert hi_paper == pytest.approx(4 * hi_code, rel=1e-4)
  # Single task, single input: eigenvalue = |x|^2 exactly (no 1/N factor).
  lo, hi = xxt_eigenvalue_extremes(key, 1, 1, input_dim=1)
  assert lo == hi and 0 < hi <= 0.25


# --------------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------------


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_context=0), "num_context must be a positive int, got 0"),
    (dict(batch_size=-1), "batch_size must be a positive int, got -1"),
    (dict(input_dim=2.5), "input_dim must be a positive int, got 2.5"),
    (dict(output_dim=True), "output_dim must be a positive int"),
    (dict(convention="Code!"), r"convention must be one of 'code', 'paper'"),
    (dict(convention=SineConvention.CODE), r"convention must be one of 'code', 'paper'"),
    (dict(distribution="gaussian"), r"distribution must be one of 'uniform', 'mixed'"),
    (dict(input_scale=0.0), "input_scale must be a positive finite number"),
    (dict(target_scale=-1), "target_scale must be a positive finite number"),
    (dict(target_scale=float("nan")), "target_scale must be a positive finite number"),
    (dict(noisy_labels=-1), "noisy_labels must be an int >= 0"),
    (dict(noisy_labels=11), r"noisy_labels must be <= num_context \(10\)"),
  ],
)
def test_linear_argument_errors(kwargs, match):
  args = dict(key=jax.random.key(0), batch_size=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    linear_regression_tasks(**args)


def test_other_argument_errors():
  key = jax.random.key(0)
  with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
    linear_regression_tasks(0, 2)
  with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
    linear_regression_tasks(jnp.zeros(2), 2)
  with pytest.raises(ValueError, match="convention must be one of 'code', 'paper'"):
    sine_regression_tasks(key, 2, convention="papers")
  with pytest.raises(ValueError, match="pool_size must be a positive int, got 0"):
    fixed_task_pool(key, 0)
  with pytest.raises(TypeError, match="pool must be a RegressionBatch"):
    sample_from_pool(key, {"x": 1}, 3)
  with pytest.raises(ValueError, match="pe_size must be an int >= 0, got -1"):
    standard_tokens(linear_regression_tasks(key, 1), pe_size=-1)
  with pytest.raises(ValueError, match="num_context must be a positive int"):
    xxt_eigenvalue_extremes(key, 10, 0)
  with pytest.raises(ValueError, match="static"):
    jax.jit(lambda k, n: linear_regression_tasks(k, n))(key, 3)


def test_string_and_enum_conventions_equivalent():
  key = jax.random.key(23)
  for s, e in [("paper", InputConvention.PAPER), ("code", InputConvention.CODE)]:
    a, b = (
      linear_regression_tasks(key, 8, convention=s),
      linear_regression_tasks(key, 8, convention=e),
    )
    np.testing.assert_array_equal(np.asarray(a.x_context), np.asarray(b.x_context))
  a = linear_regression_tasks(key, 8, distribution="mixed")
  b = linear_regression_tasks(key, 8, distribution=InputDistribution.MIXED)
  np.testing.assert_array_equal(np.asarray(a.x_context), np.asarray(b.x_context))

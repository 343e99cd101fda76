"""Exact-identity tests of the GD constructions (sheet §8) and the GD baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.attention import (
  Mask,
  Transformer,
  linear_attention,
  linear_attention_from_products,
)
from innerloop_core.testing import relative_error as rel_err
from innerloop_icl_gd import gd
from innerloop_tasks.regression import RegressionBatch, constructed_tokens, linear_regression_tasks

NUM_CONTEXT, INPUT_DIM = 10, 10


def _tasks(seed, batch_size=64, output_dim=1):
  """Small code-convention task batches from numpy: the identities need no particular
  sampler, and compiling JAX's RNG for every shape would dominate the test time."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(batch_size, output_dim, INPUT_DIM)).astype(np.float32)
  x = rng.uniform(-0.5, 0.5, size=(batch_size, NUM_CONTEXT + 1, INPUT_DIM)).astype(np.float32)
  y = np.einsum("bij,bnj->bni", w, x)
  return RegressionBatch(*(jnp.asarray(a) for a in (x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)))


def _generated(seed, batch_size, **kwargs):
  # RBG keys compile several times faster than threefry on CPU; statistics are the same.
  key = jax.random.key(seed, impl="rbg")
  return linear_regression_tasks(key, batch_size, NUM_CONTEXT, INPUT_DIM, **kwargs)


def _gd_loss(w, x, y):
  """L(W) = 1/(2N) Σ_i ‖W x_i − y_i‖² for one task; w [Dy, Dx], x [N, Dx], y [N, Dy]."""
  return 0.5 * jnp.mean(jnp.sum((x @ w.T - y) ** 2, axis=-1))


@jax.jit
def _explicit_gd(batch, w0, etas):
  """GD steps on W per task, gradients by autodiff (independent of the recursion). -> W [B, Dy, Dx]."""
  w = jnp.broadcast_to(w0, batch.w.shape)
  for eta in etas:  # a list: unrolled
    w = w - eta * jax.vmap(jax.grad(_gd_loss))(w, batch.x_context, batch.y_context)
  return w


def _tokens_with_w0(batch, w0):
  """Constructed tokens whose query y-slot starts at −W_0 x_q (Prop 1 with W_0 ≠ 0)."""
  e = constructed_tokens(batch)
  return e.at[:, -1, INPUT_DIM:].set(-batch.x_query @ w0.T)


@jax.jit
def _lsa(params, e):
  return e + linear_attention(e, **params, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT)


def _random_w0_eta(seed, output_dim):
  rng = np.random.default_rng(seed)
  w0 = jnp.asarray(rng.normal(size=(output_dim, INPUT_DIM)), jnp.float32)
  eta, gamma = float(rng.uniform(0.5, 8.0)), float(rng.uniform(0.02, 0.2))
  return w0, eta, gamma


def _load(model, params, layer=0):
  for name, value in params.items():
    getattr(model.blocks[layer].attention, name)[...] = value


def _run(model, e, **kwargs):
  """model(e, mask=CONTEXT_ONLY, num_context=N, **kwargs), compiled once."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, e):
    return nnx.merge(graphdef, state)(e, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT, **kwargs)

  return forward(state, e)


def _stack(params_per_layer, tied, depth):
  d = params_per_layer[0]["w_q"].shape[-1]
  model = Transformer(
    dim=d,
    num_layers=depth,
    num_heads=1,
    key_size=d,
    attention="linear",
    tied=tied,
    key=jax.random.key(0, impl="rbg"),
  )
  for layer, params in enumerate(params_per_layer):
    _load(model, params, layer)
  return model


@pytest.fixture(scope="module")
def validation():
  """10⁴ code-convention tasks, the size the authors evaluate on."""
  return _generated(5, 10_000)


@pytest.fixture(scope="module")
def gd1_search(validation):
  return gd.line_search_eta(validation)


# ---- §8 tests 1 and 4: Prop 1 is one GD step for every token ---------------------------


@pytest.mark.parametrize("output_dim", [1, 8])
def test_prop1_layer_is_one_gd_step_for_every_token(output_dim):
  batch = _tasks(1, output_dim=output_dim)
  w0, eta, _ = _random_w0_eta(2, output_dim)
  e = _tokens_with_w0(batch, w0)
  out = _lsa(gd.prop1_params(INPUT_DIM, output_dim, eta, NUM_CONTEXT, w0), e)

  w1 = _explicit_gd(batch, w0, [eta])
  delta_w = w1 - w0
  want = e.at[..., INPUT_DIM:].add(-jnp.einsum("bij,btj->bti", delta_w, e[..., :INPUT_DIM]))
  assert rel_err(out, want) <= 1e-5
  assert rel_err(out[..., INPUT_DIM:], want[..., INPUT_DIM:]) <= 1e-5  # the part that moves
  y_hat = gd.readout(out, output_dim)
  assert rel_err(y_hat, jnp.einsum("bij,bj->bi", w1, batch.x_query)) <= 1e-5


def test_prop1_with_zero_w0_on_plain_tokens_equals_gd_predict():
  batch = _tasks(3)
  out = _lsa(gd.prop1_params(INPUT_DIM, 1, 4.0, NUM_CONTEXT), constructed_tokens(batch))
  assert rel_err(gd.readout(out, 1), gd.gd_predict(batch, jnp.array([4.0]))) <= 1e-5


# ---- §8 test 2: readout sign guard -------------------------------------------------------


def test_readout_sign_guard(validation, gd1_search):
  eta, best_loss = gd1_search
  out = _lsa(gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT), constructed_tokens(validation))
  right = gd.query_loss(gd.readout(out, 1), validation.y_query)
  wrong = gd.query_loss(-gd.readout(out, 1), validation.y_query)
  assert abs(float(right) / float(best_loss) - 1) < 1e-4
  assert float(wrong) > 3 * float(best_loss)


# ---- §8 tests 3 and 4: GD++ ---------------------------------------------------------------


@pytest.mark.parametrize("output_dim", [1, 8])
def test_gd_plus_plus_layer(output_dim):
  batch = _tasks(5, output_dim=output_dim)
  w0, eta, gamma = _random_w0_eta(6, output_dim)
  e = _tokens_with_w0(batch, w0)
  out = _lsa(gd.gd_plus_plus_params(INPUT_DIM, output_dim, eta, gamma, NUM_CONTEXT, w0), e)

  x_all = e[..., :INPUT_DIM]  # context and query, pre-update
  xxt = jnp.einsum("bni,bnj->bij", batch.x_context, batch.x_context)  # Σ_{i<=N} x_i x_iᵀ, no 1/N
  want_x = x_all - gamma * jnp.einsum("bij,btj->bti", xxt, x_all)
  delta_w = _explicit_gd(batch, w0, [eta]) - w0
  want_y = e[..., INPUT_DIM:] - jnp.einsum("bij,btj->bti", delta_w, x_all)
  assert rel_err(out[..., :INPUT_DIM], want_x) <= 1e-5
  assert rel_err(out[..., INPUT_DIM:], want_y) <= 1e-5
  # The correction is not vacuous: it moves x by a visible amount.
  assert rel_err(out[..., :INPUT_DIM], x_all) > 1e-2


# ---- §8 test 5: K-layer stacks = K GD steps -------------------------------------------------


def test_tied_prop1_stack_is_k_gd_steps():
  k, eta = 3, 3.0
  batch = _tasks(7)
  model = _stack([gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT)], tied=True, depth=k)
  out = _run(model, constructed_tokens(batch))
  y_tf = gd.readout(out, 1)
  y_rec = gd.gd_predict(batch, jnp.full((k,), eta))
  y_w = jnp.einsum(
    "bij,bj->bi", _explicit_gd(batch, jnp.zeros((1, INPUT_DIM)), [eta] * k), batch.x_query
  )
  assert rel_err(y_tf, y_rec) <= 1e-5
  assert rel_err(y_rec, y_w) <= 1e-5
  # K steps differ from one step, so the comparison has teeth.
  assert rel_err(gd.gd_predict(batch, jnp.array([eta])), y_rec) > 1e-2


def test_tied_prop1_stack_from_nonzero_w0_is_k_gd_steps():
  k = 3
  batch = _tasks(8, output_dim=2)
  w0, eta, _ = _random_w0_eta(9, 2)
  model = _stack([gd.prop1_params(INPUT_DIM, 2, eta, NUM_CONTEXT, w0)], tied=True, depth=k)
  out = _run(model, _tokens_with_w0(batch, w0))
  y_w = jnp.einsum("bij,bj->bi", _explicit_gd(batch, w0, [eta] * k), batch.x_query)
  assert rel_err(gd.readout(out, 2), y_w) <= 1e-5


def test_untied_gd_plus_plus_stack_equals_recursion():
  etas, gammas = jnp.array([2.0, 5.0, 3.0]), jnp.array([0.05, 0.15, 0.1])
  batch = _tasks(10)
  layers = [
    gd.gd_plus_plus_params(INPUT_DIM, 1, eta, gamma, NUM_CONTEXT)
    for eta, gamma in zip(etas, gammas, strict=True)
  ]
  model = _stack(layers, tied=False, depth=3)
  out = _run(model, constructed_tokens(batch))
  y_rec = gd.gd_predict(batch, etas, gammas)
  assert rel_err(gd.readout(out, 1), y_rec) <= 1e-5
  assert rel_err(gd.gd_predict(batch, etas), y_rec) > 1e-2  # γ matters


# ---- §8 test 6: mask guard -----------------------------------------------------------------


def test_query_in_keys_changes_output_for_nonzero_w0():
  batch = _tasks(11)
  w0, eta, _ = _random_w0_eta(12, 1)
  e = constructed_tokens(batch)
  params = gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT, w0)
  context_only = linear_attention(e, **params, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT)
  everything = linear_attention(e, **params, mask=Mask.NONE)
  assert float(jnp.abs(context_only - everything).max()) > 1e-3
  # With W_0 = 0 the query's value (0, 0 − 0) vanishes, so including it is harmless.
  params0 = gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT)
  np.testing.assert_allclose(
    linear_attention(e, **params0, mask=Mask.NONE),
    linear_attention(e, **params0, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT),
    atol=1e-6,
  )


# ---- §8 test 7: products, β-rescaling and interpolation ---------------------------------------


def _products_predict(batch, products):
  e = constructed_tokens(batch)
  out = e + linear_attention_from_products(
    e, *products, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT
  )
  return gd.readout(out, batch.y_query.shape[-1])


def test_products_reproduce_the_layer():
  # Random (non-symmetric) weights catch a transposed M_KQ (sheet pitfall 11).
  rng = np.random.default_rng(13)
  d = INPUT_DIM + 1
  shapes = {"w_q": (2, d, 5), "w_k": (2, d, 5), "w_v": (2, d, 3), "w_p": (2, 3, d)}
  params = {
    name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in shapes.items()
  }
  e = constructed_tokens(_tasks(14))
  m_kq, m_pv = gd.interaction_products(params)
  assert m_kq.shape == m_pv.shape == (2, d, d)
  direct = linear_attention(e, **params, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT)
  via = linear_attention_from_products(
    e, m_kq, m_pv, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT
  )
  assert rel_err(via, direct) <= 1e-5
  # The same from a SelfAttention module.
  model = _stack([gd.prop1_params(INPUT_DIM, 1, 2.0, NUM_CONTEXT)], tied=True, depth=1)
  for got, want in zip(
    gd.interaction_products(model.blocks[0].attention),
    gd.interaction_products(gd.prop1_params(INPUT_DIM, 1, 2.0, NUM_CONTEXT)),
    strict=True,
  ):
    np.testing.assert_array_equal(got, want)


def test_beta_rescaling_and_self_interpolation_keep_predictions():
  batch = _tasks(15)
  eta = 5.0
  construction = gd.interaction_products(gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT))
  base = _products_predict(batch, construction)
  c = 7.3
  scaled = (construction[0] * c, construction[1] / c)
  rescaled = gd.rescale_products(*scaled, INPUT_DIM)
  np.testing.assert_allclose(jnp.diagonal(rescaled[0][0])[:INPUT_DIM], 1.0, rtol=1e-6)
  for got, want in zip(rescaled, construction, strict=True):
    np.testing.assert_allclose(got, want, atol=1e-6)
  mixed = gd.interpolate_products(rescaled, construction)
  assert float(jnp.abs(_products_predict(batch, mixed) - base).max()) <= 1e-6
  assert float(jnp.abs(_products_predict(batch, scaled) - base).max()) <= 1e-6
  # Interpolating with a different η does change predictions (the check has teeth).
  other = gd.interaction_products(gd.prop1_params(INPUT_DIM, 1, 2 * eta, NUM_CONTEXT))
  halfway = gd.interpolate_products(construction, other, 0.5)
  assert rel_err(_products_predict(batch, halfway), 1.5 * base) <= 1e-5


@pytest.mark.parametrize("heads", [1, 2])
def test_extract_eta_gamma_from_scaled_products(heads):
  eta, gamma = 6.1, 0.17
  m_kq, m_pv = gd.interaction_products(
    gd.gd_plus_plus_params(INPUT_DIM, 1, eta, gamma, NUM_CONTEXT)
  )
  m_kq, m_pv = 0.3 * m_kq, m_pv / 0.3
  if heads == 2:  # split the value path over two heads sharing M_KQ
    m_kq = jnp.concatenate([m_kq, m_kq])
    m_pv = jnp.concatenate([0.25 * m_pv, 0.75 * m_pv])
  m_kq, m_pv = gd.rescale_products(m_kq, m_pv, INPUT_DIM)
  got_eta, got_gamma = gd.extract_eta_gamma(m_pv, INPUT_DIM, 1, NUM_CONTEXT)
  np.testing.assert_allclose([got_eta, got_gamma], [eta, gamma], rtol=1e-5)


# ---- §8 test 10: dampening --------------------------------------------------------------------


def test_damped_steps():
  batch = _tasks(16)
  eta, lam = 6.0, 0.75
  params = gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT)
  model = _stack([params], tied=True, depth=1)
  e = constructed_tokens(batch)
  delta = linear_attention(e, **params, mask=Mask.CONTEXT_ONLY, num_context=NUM_CONTEXT)
  one = _run(model, e, residual_scale=lam)
  assert rel_err(one, e + lam * delta) <= 1e-6
  # 20 damped layers = 20 GD steps with step λη (W ← W − λη∇L).
  many = _run(model, e, num_layers=20, residual_scale=lam)
  assert rel_err(gd.readout(many, 1), gd.gd_predict(batch, jnp.full((20,), lam * eta))) <= 1e-4


# ---- baselines -------------------------------------------------------------------------------


def test_line_search_gd1_loss_code_convention(validation, gd1_search):
  eta, loss = gd1_search
  assert 0.19 <= float(loss) <= 0.22  # sheet §5 row 1
  assert 0.001 < float(eta) < 24.9  # an interior optimum of the grid
  grid_loss = gd.query_loss(gd.gd_predict(validation, jnp.array([eta])), validation.y_query)
  np.testing.assert_allclose(grid_loss, loss, rtol=1e-6)


def test_line_search_scaling_law(validation, gd1_search):
  # Sheet §8 test 9: x -> c·x (same W) multiplies the best loss by c² and divides η by c².
  paper = _generated(5, 10_000, convention="paper")  # same key: same W, x doubled
  np.testing.assert_array_equal(paper.w, validation.w)
  np.testing.assert_allclose(paper.x_context, 2 * validation.x_context, rtol=1e-6, atol=1e-7)
  eta_code, loss_code = gd1_search
  eta_paper, loss_paper = gd.line_search_eta(paper)
  assert abs(float(loss_paper / loss_code) / 4 - 1) < 0.05
  assert abs(float(eta_code / eta_paper) / 4 - 1) < 0.05


def test_gd_steps_improve_and_line_search_rejects_bad_input(validation, gd1_search):
  _, loss1 = gd1_search
  _, loss2 = gd.line_search_eta(validation, 2)
  assert float(loss2) < float(loss1)
  with pytest.raises(ValueError, match="num_steps"):
    gd.line_search_eta(validation, 0)
  with pytest.raises(ValueError, match="gammas"):
    gd.gd_predict(validation, jnp.ones(2), jnp.ones(3))


def test_fit_gd_plus_plus_beats_gd2(validation):
  eta2, loss_gd2 = gd.line_search_eta(validation, 2)

  def sample(key):
    return linear_regression_tasks(key, 512, NUM_CONTEXT, INPUT_DIM)

  etas, gammas, final = gd.fit_gd_plus_plus(
    jax.random.key(0, impl="rbg"),
    sample,
    2,
    shared=True,
    steps=300,
    learning_rate=0.03,
    init_eta=eta2,
    init_gamma=0.0,
  )
  assert etas.shape == gammas.shape == (2,)
  assert float(etas[0]) == float(etas[1]) and float(gammas[0]) == float(gammas[1])
  loss_pp = gd.query_loss(gd.gd_predict(validation, etas, gammas), validation.y_query)
  assert float(loss_pp) < 0.9 * float(loss_gd2)
  assert float(gammas[0]) > 0  # the curvature correction shrinks along large-variance directions
  assert abs(float(final) / float(loss_pp) - 1) < 0.25  # one batch of 512: noisy, same scale


# ---- alignment --------------------------------------------------------------------------------


def test_alignment_of_construction_and_gd():
  batch = _tasks(17)
  eta = 6.0
  params = gd.prop1_params(INPUT_DIM, 1, eta, NUM_CONTEXT)

  def lsa_predict(b):
    return gd.readout(_lsa(params, constructed_tokens(b)), 1)

  def gd1(b):
    return gd.gd_predict(b, jnp.array([eta]))

  same = gd.alignment(lsa_predict, gd1, batch)
  assert float(same["pred_diff"]) <= 1e-5
  assert float(same["sens_diff"]) <= 1e-5
  assert float(same["sens_cos"]) >= 1 - 1e-5

  # GD-1 vs twice the step: s doubles, so cos = 1 and ‖Δs‖ = ‖s‖ = ‖ΔW‖ = (η/N)‖Σ y_i x_i‖.
  def gd1_double(b):
    return gd.gd_predict(b, jnp.array([2 * eta]))

  diff = gd.alignment(gd1, gd1_double, batch)
  delta_w = eta / NUM_CONTEXT * jnp.einsum("bni,bnj->bij", batch.y_context, batch.x_context)[:, 0]
  np.testing.assert_allclose(
    diff["sens_diff"], jnp.mean(jnp.linalg.norm(delta_w, axis=-1)), rtol=1e-5
  )
  np.testing.assert_allclose(diff["pred_diff"], jnp.mean(jnp.abs(gd1(batch))), rtol=1e-5)
  np.testing.assert_allclose(diff["sens_cos"], 1.0, rtol=1e-5)


def test_readout_and_products_reject_bad_input():
  with pytest.raises(ValueError, match="output_dim"):
    gd.readout(jnp.zeros((2, 11, 11)), 11)
  with pytest.raises(ValueError, match="attn_params"):
    gd.interaction_products({"w_q": jnp.zeros((1, 2, 2))})
  with pytest.raises(ValueError, match="w0"):
    gd.prop1_params(INPUT_DIM, 1, 1.0, NUM_CONTEXT, w0=jnp.zeros((INPUT_DIM, 1)))

"""Meta-learned INR (ours, sheet §4's instance) on a small INR: the implicit meta-gradient
equals the explicit λ(H + λI)⁻¹∇L and BPTT through 200 inner steps, LCP-DI's update follows
it in the weak-control limit, the pixel split, the glyph generator, clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core import config as core_config
from innerloop_core.fixed_point import SolverConfig, unrolled
from innerloop_least_control import meta
from innerloop_least_control import methods as M
from innerloop_least_control.experiments import meta_method
from innerloop_tasks.glyphs import text_images

SPEC = meta.INRSpec(side=8, frequencies=4, hidden=8)  # N = 81 fast weights
TIGHT = SolverConfig(tol=1e-7, max_iter=3000)


def _tasks(count=3):
  support, query = meta.split_pixels(text_images(0, count, side=8))
  return jnp.asarray(support), jnp.asarray(query)


def test_glyphs_are_deterministic_images():
  a, b = text_images(3, 5), text_images(3, 5)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (5, 16, 16) and a.dtype == np.float32
  assert a.min() >= 0.0 and a.max() <= 1.0
  assert all(img.max() > 0.5 for img in a)  # every image holds a drawn character
  assert not np.array_equal(a, text_images(4, 5))
  with pytest.raises(ValueError, match="side >= 8"):
    text_images(0, 1, side=4)


def test_pixel_split_follows_the_coordinates():
  side = 8
  img = np.arange(side * side, dtype=np.float32).reshape(1, side, side)
  support, query = meta.split_pixels(img)
  sup_c, qry_c = meta.coordinates(side)
  assert support.shape == query.shape == (1, side * side // 2)
  # Pixel (i, j) sits at coordinate ((i + ½)/S·2 − 1, (j + ½)/S·2 − 1).
  for values, coords in ((support[0], sup_c), (query[0], qry_c)):
    ij = np.rint((coords + 1.0) / 2.0 * side - 0.5).astype(int)
    np.testing.assert_array_equal(values, img[0, ij[:, 0], ij[:, 1]])


def test_implicit_gradient_equals_explicit_formula_and_bptt():
  theta = meta.init_theta(SPEC, jax.random.key(0))
  support, query = _tasks()
  grad = meta.implicit_gradient(SPEC, theta, support, query, TIGHT)
  # Explicit: Σ_b λ(H_b + λI)⁻¹ ∇φ L at φ*_b, H_b the Hessian of L_in.
  phi = meta.adapt(SPEC, theta, support, TIGHT).value
  dl = jax.grad(lambda p: meta.query_loss(meta.readout(SPEC, p), query))(phi)
  explicit = 0.0
  for b in range(support.shape[0]):
    h = jax.hessian(functools.partial(meta.inner_loss, SPEC, support=support[b]))(phi[b])
    lam = SPEC.prox
    explicit = explicit + lam * jnp.linalg.solve(h + lam * jnp.eye(h.shape[0]), dl[b])
  np.testing.assert_allclose(grad, explicit, rtol=1e-3, atol=1e-7)

  def through_solver(t):
    f = functools.partial(meta.inner_map, SPEC, (t, support))
    phi_k = unrolled(f, meta.at_theta(t, support.shape[0]), 200)  # f contracts by ≈ 0.7 a step here
    return meta.query_loss(meta.readout(SPEC, phi_k), query)

  bptt = jax.grad(through_solver)(theta)
  assert float(jnp.linalg.norm(bptt - grad) / jnp.linalg.norm(grad)) <= 1e-3


def test_lcp_update_follows_the_meta_gradient_under_weak_control():
  theta = meta.init_theta(SPEC, jax.random.key(1))
  support, query = _tasks()
  grad = meta.implicit_gradient(SPEC, theta, support, query, TIGHT)
  weak = M.ControlConfig(
    alpha=1.0, k_i=1e-3, solver=SolverConfig(tol=1e-8, max_iter=5000, per_leaf=True)
  )
  update = meta.lcp_update(SPEC, theta, support, query, weak)
  cosine = jnp.dot(update, -grad) / (jnp.linalg.norm(update) * jnp.linalg.norm(grad))
  assert float(cosine) >= 0.999
  # Scale: Δθ → (k_i/α)·(−∇θ L).
  np.testing.assert_allclose(jnp.linalg.norm(update), 1e-3 * jnp.linalg.norm(grad), rtol=0.05)


def test_meta_training_loss_gradients():
  support, query = _tasks(2)
  model = meta.MetaINR(SPEC, jax.random.key(2))
  # k_i/α = 0.1: with 2 tasks of 32 query pixels ∂L/∂y is 1/64 of the error, and k_i/α = 1
  # already makes the Euler-discretised control loop of this small INR diverge.
  ctrl = M.ControlConfig(
    alpha=1.0, k_i=0.1, solver=SolverConfig(tol=1e-6, max_iter=3000, per_leaf=True)
  )
  loss = functools.partial(
    meta.meta_training_loss, support=support, query=query, spec=SPEC, ctrl=ctrl, solver=TIGHT
  )
  from flax import nnx

  for method in (M.Method.RBP, M.Method.LCP_DI):
    value, grads = nnx.value_and_grad(lambda m, method=method: loss(m, method=method))(model)
    theta = model.theta[...]
    phi = meta.adapt(SPEC, theta, support, TIGHT).value
    np.testing.assert_allclose(value, meta.query_loss(meta.readout(SPEC, phi), query), rtol=1e-5)
    g = grads["theta"][...]
    assert g.shape == theta.shape and bool(jnp.all(jnp.isfinite(g)))
    if method is M.Method.LCP_DI:
      np.testing.assert_allclose(g, -meta.lcp_update(SPEC, theta, support, query, ctrl), rtol=1e-5)
  with pytest.raises(ValueError, match="rbp and lcp-di"):
    loss(model, method=M.Method.LCP_KP)


def test_meta_rows_parse():
  assert meta_method("inr-lcp-di") is M.Method.LCP_DI
  with pytest.raises(core_config.ConfigError, match="inr-rbp"):
    meta_method("inr-lcp-kp")


def test_bad_meta_settings_name_the_field():
  from innerloop_least_control.config import MetaLearning

  with pytest.raises(core_config.ConfigError, match="meta.spec.side"):
    MetaLearning(spec=meta.INRSpec(side=9))
  with pytest.raises(core_config.ConfigError, match="inner_rate"):
    MetaLearning(spec=meta.INRSpec(inner_rate=0.0))

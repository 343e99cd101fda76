"""Meta-learning by least control (ours, sheet §4's instance), for both inner problems (a small
INR and a small glyph classifier): the implicit meta-gradient equals the explicit
λ(H + λI)⁻¹∇L and BPTT through the inner steps, LCP-DI's update follows it in the weak-control
limit; the pixel split, the glyph generators, the episode sampler, clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core import config as core_config
from innerloop_core.fixed_point import SolverConfig, unrolled
from innerloop_least_control import meta
from innerloop_least_control import methods as M
from innerloop_least_control.experiments import meta_method, nearest_neighbour_accuracy
from innerloop_tasks import glyphs
from innerloop_tasks.glyphs import text_images

SPEC = meta.INRSpec(side=8, frequencies=4, hidden=8)  # N = 81 fast weights
# N = 4·64 + 4 + 3·4 + 3 = 275 fast weights; η = 0.05 contracts here (curvature ≤ ≈ 8 + λ).
FEW = meta.FewShotSpec(ways=3, side=8, hidden=4, prox=10.0, inner_rate=0.05)
TIGHT = SolverConfig(tol=1e-7, max_iter=3000)


def _tasks(count=3):
  support, query = meta.split_pixels(text_images(0, count, side=8))
  return jnp.asarray(support), jnp.asarray(query)


def _episodes(count=3):
  alphabet = glyphs.stroke_alphabet(0, 6)
  drawings = glyphs.render_glyphs(alphabet, 4, side=8, seed=0).reshape(6, 4, 64)
  return glyphs.sample_episodes(jax.random.key(0), jnp.asarray(drawings), count, 3, 2)


PROBLEMS = {"inr": (SPEC, _tasks), "fewshot": (FEW, _episodes)}


def query_tasks(query):
  return jax.tree.leaves(query)[0].shape[0]


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


@pytest.mark.parametrize("name", PROBLEMS)
def test_implicit_gradient_equals_explicit_formula_and_bptt(name):
  problem, tasks = PROBLEMS[name]
  theta = problem.init_theta(jax.random.key(0))
  support, query = tasks()

  # Each side compiled once (eager while-loops and per-task Hessians compile piecemeal).
  @jax.jit
  def implicit_and_explicit(theta, support, query):
    grad = meta.implicit_gradient(problem, theta, support, query, TIGHT)
    # Explicit: Σ_b λ(H_b + λI)⁻¹ ∇φ L at φ*_b, H_b the Hessian of L_in.
    phi = meta.adapt(problem, theta, support, TIGHT).value
    dl = jax.grad(lambda p: problem.outer_loss(meta.readout(problem, query, p), query))(phi)
    h = jax.vmap(jax.hessian(problem.inner_loss))(phi, support)  # (B, N, N)
    lam_i = problem.prox * jnp.eye(phi.shape[1])
    solved = jax.vmap(lambda h_b, d_b: jnp.linalg.solve(h_b + lam_i, d_b))(h, dl)
    return grad, problem.prox * jnp.sum(solved, axis=0)

  @jax.jit
  def bptt(theta, support, query):
    def through_solver(t):
      f = functools.partial(meta.inner_map, problem, (t, support))
      # f contracts by ≈ 0.7 (INR) / ≈ 0.5 (few-shot) a step here: 200 steps reach φ*.
      phi_k = unrolled(f, meta.at_theta(t, query_tasks(query)), 200)
      return problem.outer_loss(meta.readout(problem, query, phi_k), query)

    return jax.grad(through_solver)(theta)

  grad, explicit = implicit_and_explicit(theta, support, query)
  np.testing.assert_allclose(grad, explicit, rtol=1e-3, atol=1e-7)
  through = bptt(theta, support, query)
  assert float(jnp.linalg.norm(through - grad) / jnp.linalg.norm(grad)) <= 1e-3


@pytest.mark.parametrize("name", PROBLEMS)
def test_lcp_update_follows_the_meta_gradient_under_weak_control(name):
  problem, tasks = PROBLEMS[name]
  theta = problem.init_theta(jax.random.key(1))
  support, query = tasks()
  weak = M.ControlConfig(
    alpha=1.0, k_i=1e-3, solver=SolverConfig(tol=1e-8, max_iter=5000, per_leaf=True)
  )

  @jax.jit
  def both(theta, support, query):
    return (
      meta.implicit_gradient(problem, theta, support, query, TIGHT),
      meta.lcp_update(problem, theta, support, query, weak),
    )

  grad, update = both(theta, support, query)
  cosine = jnp.dot(update, -grad) / (jnp.linalg.norm(update) * jnp.linalg.norm(grad))
  assert float(cosine) >= 0.999
  # Scale: Δθ → (k_i/α)·(−∇θ L).
  np.testing.assert_allclose(jnp.linalg.norm(update), 1e-3 * jnp.linalg.norm(grad), rtol=0.05)


@pytest.mark.parametrize("name", PROBLEMS)
def test_meta_training_loss_gradients(name):
  from flax import nnx

  problem, tasks = PROBLEMS[name]
  support, query = tasks(2)
  model = meta.MetaInit(problem, jax.random.key(2))
  # k_i/α = 0.1: with 2 tasks of 32 query pixels ∂L/∂y is 1/64 of the error, and k_i/α = 1
  # already makes the Euler-discretised control loop of this small INR diverge.
  ctrl = M.ControlConfig(
    alpha=1.0, k_i=0.1, solver=SolverConfig(tol=1e-6, max_iter=3000, per_leaf=True)
  )
  graphdef, state = nnx.split(model)

  @functools.partial(jax.jit, static_argnums=1)
  def value_and_grad(state, method):
    def loss(state):
      return meta.meta_training_loss(
        nnx.merge(graphdef, state), support, query, problem, method, ctrl, TIGHT
      )

    return jax.value_and_grad(loss)(state)

  @jax.jit
  def reference(theta):
    phi = meta.adapt(problem, theta, support, TIGHT).value
    expected = problem.outer_loss(meta.readout(problem, query, phi), query)
    return expected, meta.lcp_update(problem, theta, support, query, ctrl)

  theta = model.theta[...]
  expected, update = reference(theta)
  for method in (M.Method.RBP, M.Method.LCP_DI):
    value, grads = value_and_grad(state, method)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    g = grads["theta"][...]
    assert g.shape == theta.shape and bool(jnp.all(jnp.isfinite(g)))
    if method is M.Method.LCP_DI:
      np.testing.assert_allclose(g, -update, rtol=1e-5)
  with pytest.raises(ValueError, match="rbp and lcp-di"):
    meta.meta_training_loss(model, support, query, problem, M.Method.LCP_KP, ctrl, TIGHT)


def test_two_layer_reads_the_documented_layout():
  key = jax.random.key(3)
  d_in, hidden, d_out = 5, 4, 3
  phi = meta.init_two_layer(key, d_in, hidden, d_out)
  assert phi.shape == (hidden * d_in + hidden + d_out * hidden + d_out,)
  x = jax.random.normal(key, (7, d_in))
  w1 = phi[: hidden * d_in].reshape(hidden, d_in)
  b1 = phi[hidden * d_in : hidden * d_in + hidden]
  rest = phi[hidden * d_in + hidden :]
  w2, b2 = rest[: d_out * hidden].reshape(d_out, hidden), rest[d_out * hidden :]
  expected = np.stack([w2 @ np.tanh(w1 @ xi + b1) + b2 for xi in np.asarray(x)])
  np.testing.assert_allclose(meta.two_layer(phi, x, hidden, d_out), expected, rtol=1e-5, atol=1e-6)
  # torch.nn.Linear's init: |w| ≤ 1/√fan_in per layer.
  assert float(jnp.max(jnp.abs(phi[: hidden * d_in + hidden]))) <= 1 / np.sqrt(d_in)
  assert float(jnp.max(jnp.abs(rest))) <= 1 / np.sqrt(hidden)


def test_stroke_glyphs_are_deterministic_and_classes_recognisable():
  alphabet = glyphs.stroke_alphabet(7, 30)
  assert len(alphabet) == 30 and all(2 <= len(c) <= 4 for c in alphabet)
  a = glyphs.render_glyphs(alphabet, 5, side=16, seed=1)
  np.testing.assert_array_equal(a, glyphs.render_glyphs(alphabet, 5, side=16, seed=1))
  assert a.shape == (30, 5, 16, 16) and a.dtype == np.float32
  assert a.min() >= 0.0 and a.max() <= 1.0 and all(img.max() > 0.5 for img in a.reshape(-1, 16, 16))
  # Drawings of one class differ (jitter, affine) ...
  assert float(np.abs(a[:, 0] - a[:, 1]).mean()) > 0.01
  # ... but resemble each other more than other classes: 1-NN on pixels, 10-way 1-shot,
  # is far above chance (10 %).
  episodes = glyphs.sample_episodes(jax.random.key(0), jnp.asarray(a.reshape(30, 5, -1)), 50, 10, 2)
  assert float(nearest_neighbour_accuracy(*episodes)) > 0.3
  with pytest.raises(ValueError, match="side >= 8"):
    glyphs.render_glyphs(alphabet, 1, side=4)
  with pytest.raises(ValueError, match="strokes"):
    glyphs.stroke_alphabet(0, 3, strokes=(3, 2))


def test_episodes_hold_distinct_classes_and_drawings():
  classes, per_class = 8, 5
  # Drawing (c, i) is the 2-pixel image [c, i]: the sampler's choices can be read back.
  drawings = jnp.stack(
    jnp.meshgrid(jnp.arange(classes), jnp.arange(per_class), indexing="ij"), axis=-1
  ).astype(jnp.float32)
  (sx, sl), (qx, ql) = glyphs.sample_episodes(jax.random.key(1), drawings, 6, 4, 3)
  assert sx.shape == (6, 4, 2) and qx.shape == (6, 12, 2)
  np.testing.assert_array_equal(sl, np.tile(np.arange(4), (6, 1)))
  np.testing.assert_array_equal(ql, np.tile(np.arange(4), (6, 3)))
  sx, qx = np.asarray(sx), np.asarray(qx)
  for t in range(6):
    support_classes = sx[t, :, 0]
    assert len(set(support_classes)) == 4  # distinct classes in a task
    for pos in range(12):
      label = ql[t, pos]
      assert qx[t, pos, 0] == support_classes[label]  # a query shows its label's class
    for j in range(4):  # the support drawing and the queries of a class are distinct drawings
      used = [sx[t, j, 1]] + [qx[t, q * 4 + j, 1] for q in range(3)]
      assert len(set(used)) == 4
  with pytest.raises(ValueError, match="ways"):
    glyphs.sample_episodes(jax.random.key(1), drawings, 1, 9, 1)


def test_nearest_neighbour_accuracy_matches_a_loop():
  (sx, sl), (qx, ql) = _episodes(4)
  got = float(nearest_neighbour_accuracy((sx, sl), (qx, ql)))
  hits = []
  for t in range(sx.shape[0]):
    for q in range(qx.shape[1]):
      d = [
        float(np.sum((np.asarray(qx[t, q]) - np.asarray(sx[t, k])) ** 2))
        for k in range(sx.shape[1])
      ]
      hits.append(int(sl[t, int(np.argmin(d))]) == int(ql[t, q]))
  assert got == pytest.approx(np.mean(hits))


def test_meta_rows_parse():
  assert meta_method("inr-lcp-di", "inr-", "meta.rows") is M.Method.LCP_DI
  assert meta_method("fewshot-rbp", "fewshot-", "fewshot.rows") is M.Method.RBP
  with pytest.raises(core_config.ConfigError, match="fewshot.rows.*'fewshot-rbp'"):
    meta_method("fewshot-lcp-kp", "fewshot-", "fewshot.rows")


def test_bad_meta_settings_name_the_field():
  from innerloop_least_control.config import MetaLearning

  with pytest.raises(core_config.ConfigError, match="meta.spec.side"):
    MetaLearning(spec=meta.INRSpec(side=9))
  with pytest.raises(core_config.ConfigError, match="inner_rate"):
    MetaLearning(spec=meta.INRSpec(inner_rate=0.0))
  from innerloop_least_control.config import FewShotMeta

  with pytest.raises(core_config.ConfigError, match="fewshot.queries"):
    FewShotMeta(queries=10)
  with pytest.raises(core_config.ConfigError, match="fewshot.spec.ways"):
    FewShotMeta(spec=meta.FewShotSpec(ways=300))


def _small_fewshot(**kw):
  from innerloop_least_control.config import FewShotMeta

  ctrl = M.ControlConfig(
    alpha=1.0, k_i=1.0, solver=SolverConfig(tol=1e-4, max_iter=200, per_leaf=True)
  )
  settings = dict(
    spec=FEW,
    train_classes=6,
    test_classes=5,
    drawings=4,
    queries=2,
    test_episodes=4,
    batch_size=2,
    steps=2,
    seeds=2,
    evals=1,
    control=ctrl,
    solver=SolverConfig(tol=1e-5, max_iter=200),
  )
  return FewShotMeta(**{**settings, **kw})


def test_few_shot_experiment_writes_results_and_figure(tmp_path):
  """End to end at toy sizes: both rows train (2 seeds vmapped), resume, and the results file
  and figure are written."""
  from innerloop_core import runlog
  from innerloop_core.cli import PaperPaths
  from innerloop_core.train import Deadline
  from innerloop_least_control import experiments, figures

  paths = PaperPaths(tmp_path, "toy")
  run_paths = experiments.Paths(results=paths.results, runs=paths.runs)
  out = experiments.few_shot(_small_fewshot(), run_paths, Deadline(None))
  assert out == runlog.read_json(paths.results / "fewshot.json")
  assert set(out["rows"]) == {"fewshot-rbp", "fewshot-lcp-di"}
  assert out["classes"] == {"train": 6, "test": 5} and out["dataset"] == "glyphs"
  for row in out["rows"].values():
    assert len(row["final_test_acc"]) == 2
    assert all(0.0 <= a <= 100.0 for a in row["final_test_acc"])
    assert row["curve"]["step"][-1] == 2
  assert 0.0 <= out["pixel_nearest_neighbour_acc"] <= 100.0
  # A second call resumes the finished runs: the same numbers.
  again = experiments.few_shot(_small_fewshot(), run_paths, Deadline(None))
  for row in out["rows"]:
    assert again["rows"][row]["final_test_acc"] == out["rows"][row]["final_test_acc"]
  paths.figures.mkdir(parents=True)
  figures.fewshot_figure(out, paths)
  assert (paths.figures / "meta_fewshot.png").stat().st_size > 0


def test_few_shot_reads_user_omniglot(tmp_path):
  """The omniglot dataset goes through the loader (folders written here in the release's
  layout); absent files are DataNotProvided, too few drawings a ConfigError naming the field."""
  from PIL import Image

  from innerloop_least_control import experiments
  from innerloop_tasks import images

  cfg = _small_fewshot(dataset="omniglot", data_dir="omni")
  with pytest.raises(images.DataNotProvided):
    experiments.few_shot_drawings(cfg, tmp_path)
  rng = np.random.default_rng(0)
  for split, chars in (("images_background", 6), ("images_evaluation", 5)):
    for c in range(chars):
      folder = tmp_path / "omni" / split / "Alphabet" / f"character{c:02d}"
      folder.mkdir(parents=True)
      for d in range(5):
        pixels = np.where(rng.random((105, 105)) < 0.1, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).convert("1").save(folder / f"{c:02d}_{d:02d}.png")
  train_x, test_x = experiments.few_shot_drawings(cfg, tmp_path)
  assert train_x.shape == (6, 4, 64) and test_x.shape == (5, 4, 64)
  with pytest.raises(core_config.ConfigError, match="fewshot.drawings"):
    experiments.few_shot_drawings(
      _small_fewshot(dataset="omniglot", data_dir="omni", drawings=9), tmp_path
    )
  with pytest.raises(core_config.ConfigError, match="fewshot.dataset"):
    _small_fewshot(dataset="omniglott")

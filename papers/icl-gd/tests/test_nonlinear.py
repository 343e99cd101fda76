"""Figs 4 and 5: the sine GD control is exact, the sensitivity and readout are right, and
tiny end-to-end runs write the result keys the published-results check reads."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.testing import relative_error as rel_err
from innerloop_core.train import Deadline
from innerloop_icl_gd import experiments, gd, nonlinear
from innerloop_icl_gd.config import PROFILES, Sine, StandardTokens
from innerloop_tasks.regression import (
  RegressionBatch,
  sinusoidal_positional_encoding,
  standard_tokens,
)

N, DX, PE = 10, 10, 10


def _sine_batch(seed, batch_size=32):
  """Sine tasks from numpy (no RNG compile): y = a sin(x + ρ), x ~ U(−5, 5)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(-5, 5, size=(batch_size, N + 1, 1)).astype(np.float32)
  a = rng.uniform(0.1, 0.5, size=(batch_size, 1, 1)).astype(np.float32)
  rho = rng.uniform(0, np.pi, size=(batch_size, 1, 1)).astype(np.float32)
  y = a * np.sin(x + rho)
  w = np.concatenate([a, rho], axis=-1)
  return RegressionBatch(*(jnp.asarray(v) for v in (x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)))


def _linear_batch(seed, batch_size=16):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(batch_size, 1, DX)).astype(np.float32)
  x = rng.uniform(-0.5, 0.5, size=(batch_size, N + 1, DX)).astype(np.float32)
  y = np.einsum("bij,bnj->bni", w, x)
  return RegressionBatch(*(jnp.asarray(a) for a in (x[:, :-1], y[:, :-1], x[:, -1], y[:, -1], w)))


_call = nnx.jit(lambda model, batch: model(batch))

# A front end at scale 1 so that the features are far from linear in x.
_SINE = Sine(init_scale=1.0, control_init_scale=1.0, control_eta_init=0.7)


def test_sine_control_is_one_exact_gd_step_on_the_features():
  model = nonlinear.SineGD(_SINE, key=jax.random.key(0))
  batch = _sine_batch(0)
  feats = nonlinear.feature_batch(model.front, batch)
  assert feats.x_context.shape == (32, N, _SINE.embed_dim)
  want = gd.gd_predict(feats, jnp.asarray([0.7]))
  assert rel_err(_call(model, batch), want) < 1e-5
  # The step is not trivial: a different η moves the prediction.
  assert rel_err(gd.gd_predict(feats, jnp.asarray([0.5])), want) > 0.1


def test_sine_lsa_with_prop1_weights_equals_the_control():
  """The trained family contains the control: same front end, LSA set to Prop 1 (key E)."""
  e = _SINE.embed_dim
  control = nonlinear.SineGD(_SINE, key=jax.random.key(1))
  lsa = nonlinear.SineLSA(_SINE, key=jax.random.key(2))
  lsa.front = control.front
  eta = 0.7
  w_qk = jnp.zeros((1, e + 1, e)).at[0, :e, :e].set(jnp.eye(e))
  lsa.attention.w_q[...] = w_qk
  lsa.attention.w_k[...] = w_qk
  lsa.attention.w_v[...] = jnp.zeros((1, e + 1, e)).at[0, e, 0].set(-1.0)
  lsa.attention.w_p[...] = jnp.zeros((1, e, e + 1)).at[0, 0, e].set(eta / N)
  batch = _sine_batch(1)
  assert rel_err(_call(lsa, batch), _call(control, batch)) < 1e-5


def test_sine_alignment_matches_gd_alignment_definitions():
  model_a = nonlinear.SineGD(_SINE, key=jax.random.key(3))
  model_b = nonlinear.SineGD(_SINE, key=jax.random.key(4))
  batch = _sine_batch(2, batch_size=8)
  grid = jnp.linspace(-5.0, 5.0, 11)
  align = nnx.jit(lambda a, b, tasks: nonlinear.sine_alignment(a, b, tasks, grid))
  ours = align(model_a, model_b, batch)
  ref = gd.alignment(model_a, model_b, batch)
  for key in ("pred_diff", "sens_diff"):
    assert float(ours[key]) == pytest.approx(float(ref[key]), rel=1e-4)
  assert float(ours["sens_sign_agreement"]) == pytest.approx(float(ref["sens_cos"]), abs=1e-5)
  assert float(ours["sens_cos"]) < 0.999
  same = align(model_a, nnx.clone(model_a), batch)
  assert float(same["sens_cos"]) == pytest.approx(1.0, abs=1e-5)
  assert float(same["pred_diff"]) == 0.0


def _pe_shift_matrix(size: int) -> np.ndarray:
  """R with PE[p] @ R = PE[p + 1] for `sinusoidal_positional_encoding`'s layout."""
  r = np.zeros((size, size), np.float32)
  for i in range(size // 2):
    om = 1.0 / 10000.0 ** (2 * i / size)
    c, s = math.cos(om), math.sin(om)
    r[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
  return r


def _standard_model(key=0):
  return nonlinear.build_standard_model(StandardTokens(), jax.random.key(key))


def _zero(attention):
  for name in ("w_q", "w_k", "w_v", "w_p"):
    w = getattr(attention, name)
    w[...] = jnp.zeros_like(w[...])


def _copy_next_token_model(scale=200.0):
  """Layer 1 (softmax) attends from token j to token j+1 by position and copies its data."""
  model = _standard_model()
  att = model.blocks[0].attention
  _zero(att)
  pe = slice(DX, DX + PE)
  att.w_q[...] = att.w_q[...].at[0, pe, :PE].set(scale * _pe_shift_matrix(PE))
  att.w_k[...] = att.w_k[...].at[0, pe, :PE].set(jnp.eye(PE))
  att.w_v[...] = att.w_v[...].at[0, :DX, :DX].set(jnp.eye(DX))
  att.w_p[...] = att.w_p[...].at[0, :DX, :DX].set(jnp.eye(DX))
  return model


def test_pe_shift_matrix():
  pe = np.asarray(sinusoidal_positional_encoding(2 * N + 1, PE))
  np.testing.assert_allclose(pe[:-1] @ _pe_shift_matrix(PE), pe[1:], atol=1e-5)


# Module arguments: one compilation per model structure, shared by the tests.
_sensitivity = nnx.jit(lambda model, t: nonlinear.first_layer_sensitivity(model, t, 2 * N))


def test_sensitivity_of_a_copy_layer_is_on_the_partner():
  model = _copy_next_token_model()
  tokens = standard_tokens(_linear_batch(0), PE)
  delta = model.blocks[0](tokens, mask="context_only", num_context=2 * N) - tokens
  # The layer really copies: token j's increment is the data of token j + 1.
  np.testing.assert_allclose(delta[:, : 2 * N - 1, :DX], tokens[:, 1 : 2 * N, :DX], atol=1e-4)
  sens = {k: float(v) for k, v in _sensitivity(model, tokens).items()}
  assert sens["partner"] == pytest.approx(math.sqrt(DX), rel=1e-3)
  assert sens["partner_x"] == pytest.approx(math.sqrt(DX), rel=1e-3)
  assert sens["other"] < 1e-3 * sens["partner"]
  assert sens["own"] < 1e-3 * sens["partner"]


def test_sensitivity_of_zero_weights_is_zero_and_of_random_weights_not():
  model = _standard_model()
  tokens = standard_tokens(_linear_batch(1), PE)
  sens = _sensitivity(model, tokens)
  assert all(float(v) > 0 for v in sens.values())
  _zero(model.blocks[0].attention)
  sens = _sensitivity(model, tokens)
  assert float(sens["partner"]) == 0.0 and float(sens["other"]) == 0.0
  assert float(sens["own"]) == 0.0


def test_standard_readout_index_and_sign():
  """Layer 1 off; layer 2 writes a Σ_i (PE_q·PE_i) e_i[Dx−1] into the query's slot Dx−1."""
  model = _standard_model()
  _zero(model.blocks[0].attention)
  att = model.blocks[1].attention
  _zero(att)
  pe = slice(DX, DX + PE)
  att.w_q[...] = att.w_q[...].at[0, pe, :PE].set(jnp.eye(PE))
  att.w_k[...] = att.w_k[...].at[0, pe, :PE].set(jnp.eye(PE))
  a = 0.3
  att.w_v[...] = att.w_v[...].at[0, DX - 1, 0].set(1.0)
  att.w_p[...] = att.w_p[...].at[0, 0, DX - 1].set(a)
  batch = _linear_batch(2)
  # Independent expectation in numpy. Standard tokens interleave x_i and (0…0, y_i).
  p = np.asarray(sinusoidal_positional_encoding(2 * N + 1, PE), np.float64)
  slot = np.stack(
    [np.asarray(batch.x_context[..., -1]), np.asarray(batch.y_context[..., 0])], axis=-1
  ).reshape(-1, 2 * N)  # e_i[Dx−1] of the 2N context tokens
  written = a * slot @ (p[: 2 * N] @ p[2 * N])
  got = nonlinear.standard_predict(model, batch, PE, "increment")
  assert got.shape == (16, 1)
  np.testing.assert_allclose(got[:, 0], -written, rtol=1e-4, atol=1e-6)
  raw = nonlinear.standard_predict(model, batch, PE, "raw")
  np.testing.assert_allclose(
    raw[:, 0], -(written + np.asarray(batch.x_query[:, -1])), rtol=1e-4, atol=1e-6
  )
  with pytest.raises(ValueError):
    nonlinear.standard_predict(model, batch, PE, "last")


def _finite(values) -> bool:
  return len(values) > 0 and all(math.isfinite(v) for v in values)


def _tiny_cfg():
  return dataclasses.replace(
    PROFILES["tiny"],
    validation_tasks=128,
    checkpoint_every=1000,
    sine=Sine(steps=6, seeds=1, batch_size=16, eval_every=3, alignment_tasks=8),
    standard=StandardTokens(steps=6, seeds=1, batch_size=16, eval_every=3, sensitivity_tasks=4),
  )


@pytest.mark.slow
def test_tiny_train_sine_writes_results(tmp_path):
  paths = experiments.Paths(results=tmp_path / "results", runs=tmp_path / "runs")
  out = nonlinear.train_sine(_tiny_cfg(), paths, Deadline(None))
  saved = json.loads((tmp_path / "results" / "fig4.json").read_text())
  for res in (out, saved):
    for values in (
      res["trained"]["final_loss"],
      res["control"]["final_loss"],
      res["alignment"]["sens_cos"],
      res["ratio"],
    ):
      assert _finite(values)
    assert res["curves"]["trained"]["val_loss"]["step"] == [0, 3, 6]
    assert np.shape(res["functions"]["trained"]) == (
      1,
      nonlinear.FIGURE_TASKS,
      nonlinear.GRID_POINTS,
    )
  assert -1.0 <= saved["alignment"]["sens_cos"][0] <= 1.0
  nonlinear.render_sine(saved, tmp_path / "fig4.png", "test")
  assert (tmp_path / "fig4.png").stat().st_size > 0


@pytest.mark.slow
def test_tiny_train_standard_tokens_writes_results(tmp_path):
  paths = experiments.Paths(results=tmp_path / "results", runs=tmp_path / "runs")
  nonlinear.train_standard_tokens(_tiny_cfg(), paths, Deadline(None))
  saved = json.loads((tmp_path / "results" / "fig5.json").read_text())
  assert _finite(saved["trained"]["final_loss"])
  for key in ("own", "partner", "other"):
    assert _finite(saved["sensitivity"][key])
  gd1, gd2 = saved["references"]["gd1"]["loss"], saved["references"]["gd2"]["loss"]
  assert math.isfinite(gd1) and math.isfinite(gd2) and gd2 < gd1
  assert saved["curves"]["sens_partner"]["step"] == [0, 3, 6]
  nonlinear.render_standard(saved, tmp_path / "fig5.png", "test")
  assert (tmp_path / "fig5.png").stat().st_size > 0

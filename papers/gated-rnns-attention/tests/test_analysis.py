"""The analyses that claims C3-C5 read: probes, influence, λ groups, pruning; the E7 model."""

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.recurrent import (
  Gate,
  GatedRNNWeights,
  gated_rnn,
  gated_rnn_readout,
  gated_rnn_states,
)
from innerloop_gated_rnns_attention import analysis
from innerloop_gated_rnns_attention.construction import Form, lsa_to_gated_rnn
from innerloop_gated_rnns_attention.models import LRUGLUNet
from innerloop_tasks.teacher_student import random_lsa_teacher


def test_probe_r2_is_one_for_linear_features_and_zero_for_noise():
  rng = np.random.default_rng(0)
  act = rng.normal(size=(4000, 6))
  linear = act @ rng.normal(size=(6, 3)) + 2.0
  noise = rng.normal(size=(4000, 2))
  np.testing.assert_allclose(analysis.probe_r2(act, linear), 1.0, atol=1e-10)
  assert np.all(np.abs(analysis.probe_r2(act, noise)) < 0.01)
  # An empty group probes with the bias alone: no information.
  assert np.all(analysis.probe_r2(act[:, []], linear) < 0.01)


def test_output_influence_is_the_readout_jacobian_column_norm():
  rng = np.random.default_rng(1)
  n, m, o = 5, 4, 3
  w = GatedRNNWeights(
    *(
      jnp.asarray(rng.normal(size=s), jnp.float32)
      for s in [(3, n), (3, n), (n,), (n, m), (n, m), (m, o)]
    )
  )
  h = jnp.asarray(rng.normal(size=(2, 3, n)), jnp.float32)
  got = np.asarray(analysis.output_influence(w, h, Gate.LINEAR))
  eps = 1e-3
  flat = h.reshape(-1, 1, n)
  step = eps * jnp.eye(n)[None]  # [1, N, N]: one perturbed copy of h per neuron
  diff = gated_rnn_readout(flat + step, w) - gated_rnn_readout(flat - step, w)  # [P, N, O]
  want = np.mean(np.linalg.norm(np.asarray(diff) / (2 * eps), axis=-1), axis=0)
  np.testing.assert_allclose(got, want, rtol=1e-2)


def test_construction_is_bimodal_and_prunes_to_itself():
  teacher = random_lsa_teacher(jax.random.key(0), 3, 2, 3, 3)
  built = lsa_to_gated_rnn(*teacher, form=Form.COMPRESSED)
  w = built.weights
  x = jax.random.normal(jax.random.key(1), (8, 10, 3))
  h = gated_rnn_states(x, w)
  influence = analysis.output_influence(w, h, Gate.LINEAR)
  assert analysis.bimodal_fraction(np.asarray(w.lam), np.asarray(influence)) == 1.0
  groups = analysis.lambda_groups(np.asarray(w.lam))
  np.testing.assert_array_equal(groups["memory"], built.memory)
  np.testing.assert_array_equal(groups["memoryless"], built.query)
  np.testing.assert_array_equal(
    np.asarray(gated_rnn(x, analysis.prune_intermediate(w))), np.asarray(gated_rnn(x, w))
  )
  # A neuron moved to λ = 0.5 is intermediate: pruning silences it.
  half = w._replace(lam=w.lam.at[0].set(0.5))
  pruned = analysis.prune_intermediate(half)
  assert float(jnp.abs(pruned.w_in_x[:, 0]).sum()) == 0.0
  # The probes find the teacher's memories in the memory group, exactly.
  flat = np.asarray(h).reshape(-1, h.shape[-1])
  r2 = analysis.probe_r2(flat[:, groups["memory"]], analysis.lsa_memory_features(teacher, x))
  assert r2.min() > 0.999


def test_lru_glu_net_shapes_and_states():
  model = LRUGLUNet(4, 8, 6, 1, 2, key=jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (3, 7, 4))
  assert model(x).shape == (3, 7, 1)
  states = model.states(x)
  assert sorted(states) == ["h0", "h1"] and states["h1"].shape == (3, 7, 12)


def test_bad_sizes_name_the_field(tmp_path):
  import dataclasses

  import pytest

  from innerloop_core.config import ConfigError
  from innerloop_core.train import Deadline
  from innerloop_gated_rnns_attention import experiments
  from innerloop_gated_rnns_attention.config import PROFILES

  cfg = PROFILES["tiny"]
  paths = experiments.Paths(results=tmp_path / "r", runs=tmp_path / "runs")
  bad_icl = dataclasses.replace(cfg, icl=dataclasses.replace(cfg.icl, main_size=99))
  with pytest.raises(ConfigError, match="icl.main_size"):
    experiments.icl(bad_icl, paths, Deadline(None))
  ts = dataclasses.replace(cfg.teacher_student, analysis_size=99)
  with pytest.raises(ConfigError, match="teacher_student.analysis_size"):
    experiments.teacher_student(dataclasses.replace(cfg, teacher_student=ts), paths, Deadline(None))


def test_project_decay_keeps_nu_in_bounds_and_lets_lambda_leave_the_boundary():
  import optax
  from flax import nnx

  from innerloop_core.recurrent import Decay, GatedLinearRNN
  from innerloop_gated_rnns_attention.models import project_decay

  model = GatedLinearRNN(2, 3, 2, 1, key=jax.random.key(0), decay=Decay.CLIPPED)
  params = nnx.state(model)
  params["nu"][...] = jnp.array([0.0, 0.5, 1.0])
  sgd, projected = optax.sgd(1.0), optax.chain(optax.sgd(1.0), project_decay(0.0, 1.0))
  grads = jax.tree.map(jnp.ones_like, params)
  grads["nu"][...] = jnp.array([1.0, -0.8, 2.0])  # steps ν to -1, 1.3, -1
  updates, _ = projected.update(grads, projected.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(np.asarray(new["nu"][...]), [0.0, 1.0, 0.0])
  plain, _ = sgd.update(grads, sgd.init(params), params)
  np.testing.assert_array_equal(np.asarray(updates["w_in_x"][...]), plain["w_in_x"][...])
  # On the bound the clip still passes gradient, so λ = 1 or 0 can move back inside.
  nu_grad = jax.grad(lambda nu: jnp.sum(jnp.clip(nu, 0.0, 1.0) * jnp.array([1.0, -1.0])))
  assert np.all(np.asarray(nu_grad(jnp.array([1.0, 0.0]))) != 0.0)


def test_reachable_decay_hits_zero_and_one_and_keeps_the_init():
  from innerloop_core.recurrent import GatedLinearRNN
  from innerloop_gated_rnns_attention.models import (
    ReachableGatedRNN,
    decay_bound,
    reachable_decay,
  )

  eps = 0.005
  b = decay_bound(eps)
  lam = np.asarray(reachable_decay(jnp.array([-b - 1.0, -b, 0.0, b, b + 1.0]), eps))
  np.testing.assert_allclose(lam, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
  assert lam[0] == 0.0 and lam[-1] == 1.0
  # Same λ at init as the sigmoid-parametrised parent with the same key.
  key = jax.random.key(3)
  reach = ReachableGatedRNN(3, 6, 4, 2, key=key, margin=eps)
  plain = GatedLinearRNN(3, 6, 4, 2, key=key)
  np.testing.assert_allclose(np.asarray(reach.lam()), np.asarray(plain.lam()), atol=1e-6)
  x = jax.random.normal(jax.random.key(4), (2, 5, 3))
  np.testing.assert_allclose(np.asarray(reach(x)), np.asarray(plain(x)), rtol=1e-4, atol=1e-5)

"""Tests of the dynamical-system generators (sheet §3.1 and §8 test 10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.config import ConfigError
from innerloop_tasks import dynamics as dyn

# WᵀW = I, the zero predictor's t = 1 loss and the noise floor (sheet §8 test 10) are tested
# in papers/mesa-optimization/tests/test_mesa_identities.py.


def test_states_are_clipped_and_shapes():
  seq = dyn.linear_sequences(jax.random.key(2), 4, length=7, dim=3, init="normal")
  assert seq.states.shape == (4, 8, 3)
  assert seq.inputs.shape == seq.targets.shape == (4, 7, 3)
  np.testing.assert_array_equal(seq.inputs[:, 1:], seq.targets[:, :-1])
  c = dyn.contracting_sequences(jax.random.key(3), 16, length=30, init="normal")
  assert float(jnp.max(jnp.abs(c.states[:, 1:]))) <= dyn.CONTRACTING_CLIP


def test_fixed_w_shares_one_teacher():
  seq = dyn.linear_sequences(jax.random.key(4), 3, length=5, fixed_w=True)
  w = dyn.orthogonal_matrices(jax.random.key(dyn.FIXED_W_SEED), 1, 10)[0]
  # Without noise and clipping the next state is W s_t: residuals are the 0.01 noise only.
  residual = seq.targets - jnp.einsum("ij,btj->bti", w, seq.inputs)
  assert float(jnp.std(residual)) == pytest.approx(0.01, rel=0.3)


def test_contracting_spectrum():
  w = dyn.contracting_matrices(jax.random.key(5), 32, 10)
  radii = jnp.abs(jnp.linalg.eigvals(w))
  assert float(jnp.max(radii)) == pytest.approx(0.9, abs=1e-3)
  assert float(jnp.min(radii)) >= 0.3 - 1e-3


def test_partial_and_nonlinear_conventions():
  p_code = dyn.partial_sequences(jax.random.key(6), 256, length=10)
  p_paper = dyn.partial_sequences(jax.random.key(6), 256, length=10, obs_scale="paper")
  # Same draws scaled by 0.5 vs √0.5 (noise aside): ratio of RMS ≈ √2.
  ratio = float(jnp.std(p_paper.states) / jnp.std(p_code.states))
  assert ratio == pytest.approx(np.sqrt(2), rel=0.02)
  n = dyn.nonlinear_sequences(jax.random.key(7), 64, length=20)
  # ‖W u/‖u‖‖ = 1: states after the first have unit norm up to the noise.
  norms = jnp.linalg.norm(n.states[:, 1:], axis=-1)
  assert float(jnp.max(jnp.abs(norms - 1))) < 0.1
  a1, _ = dyn.nonlinear_mlp()
  a2, _ = dyn.nonlinear_mlp()
  np.testing.assert_array_equal(a1, a2)  # fixed across calls (keys 421/422)
  with pytest.raises(ConfigError, match="convention"):
    dyn.nonlinear_mlp(convention="bogus")


def test_constructed_tokens_and_mask():
  s = jnp.arange(1.0, 1.0 + 2 * 3 * 2).reshape(2, 3, 2)
  e = dyn.constructed_tokens(s)
  assert e.shape == (2, 3, 8)
  np.testing.assert_array_equal(e[:, :, :2], 0.0)
  np.testing.assert_array_equal(e[:, :, 2:4], s)
  np.testing.assert_array_equal(e[:, :, 4:6], s)
  np.testing.assert_array_equal(e[:, 0, 6:], 0.0)  # s_0 = 0
  np.testing.assert_array_equal(e[:, 1:, 6:], s[:, :-1])
  mask = dyn.one_layer_input_mask(2)
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 1, 1, 1, 1])
  assert dyn.constructed_tokens(s, "paper").shape == (2, 3, 6)


@pytest.mark.parametrize("eos,prefix", [(False, 0), (True, 0), (True, 3)])
def test_fewshot_layout(eos, prefix):
  batch = dyn.fewshot_sequences(jax.random.key(8), 2, 4, 3, eos=eos, num_prefix=prefix)
  width = 3 if eos else 2
  length = prefix + 4 * width
  assert batch.tokens.shape == (2, length, 4)
  assert batch.targets.shape == (2, length, 3)
  assert int(batch.loss_mask.sum()) == 4
  x_pos = np.flatnonzero(np.asarray(batch.loss_mask))
  np.testing.assert_array_equal(x_pos, prefix + width * np.arange(4))
  np.testing.assert_array_equal(np.asarray(batch.pair_index)[x_pos], [1, 2, 3, 4])
  # The target at x_i's position is the next token's y_i.
  np.testing.assert_array_equal(batch.targets[:, x_pos], batch.tokens[:, x_pos + 1, :3])
  if eos:
    np.testing.assert_array_equal(batch.tokens[:, x_pos + 2, 3], 1.0)

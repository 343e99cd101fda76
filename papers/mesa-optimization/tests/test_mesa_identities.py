"""Exact-identity tests of the sheet's §8 that belong to the workspace (1, 6, 7, 8, 10).

Tests 2-5 and 9 (the mesa-layer's RLS scan, reverse recursion, custom VJP, LSA limit,
causality) live with the layer in packages/core.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from innerloop_core.attention import Mask, linear_attention
from innerloop_core.testing import full_float32_matmuls, relative_error
from innerloop_mesa_optimization import models, solvers
from innerloop_tasks import dynamics as dyn

N, T, B = 10, 12, 6


@pytest.fixture(scope="module")
def seq():
  return dyn.linear_sequences(jax.random.key(0), B, length=T, dim=N)


def _strict_sum_reference(x, y, t):
  """Σ_{j<t} y_j x_jᵀ and Σ_{j<t} x_j x_jᵀ by a plain loop (t is 0-based here)."""
  cross = sum((jnp.outer(y[j], x[j]) for j in range(t)), jnp.zeros((N, N)))
  gram = sum((jnp.outer(x[j], x[j]) for j in range(t)), jnp.zeros((N, N)))
  return cross, gram


# ------------------------------------------------------------------------------- test 1


def test_prop1_code_layout_is_one_gd_step(seq):
  """Masked code tokens [0, s_t, s_t, s_{t−1}] through the Prop-1 layer: Δa_t = −η∇L_t(0) s_t."""
  eta = 0.031
  w = models.prop1_weights(N, eta)
  with full_float32_matmuls():
    e = dyn.constructed_tokens(seq.inputs) * dyn.one_layer_input_mask(N)
    out = (e + linear_attention(e, *w, mask=Mask.CAUSAL))[..., :N]
    want = []
    for b in range(B):
      row = []
      for t in range(T):
        cross, _ = _strict_sum_reference(seq.inputs[b], seq.targets[b], t)
        row.append(eta * cross @ seq.inputs[b, t])  # (Φ_0 − η∇L_t(Φ_0)) s_t with Φ_0 = 0
      want.append(jnp.stack(row))
    want = jnp.stack(want)
  assert relative_error(out, want) <= 1e-5
  assert relative_error(solvers.gd1_predict(seq.inputs, seq.targets, eta), want) <= 1e-5


def test_prop1_paper_layout_with_phi0(seq):
  """Tokens [Φ_0 s_t, s_t, s_{t−1}]: a + Δa = (Φ_0 − η∇L_t(Φ_0)) s_t for a nonzero Φ_0."""
  eta = 0.05
  phi_0 = 0.3 * jax.random.normal(jax.random.key(1), (N, N))
  w = models.prop1_weights(N, eta, phi_0=phi_0, layout="paper")
  x, y = seq.inputs, seq.targets
  prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
  with full_float32_matmuls():
    e = jnp.concatenate([x @ phi_0.T, x, prev], axis=-1)
    out = (e + linear_attention(e, *w, mask=Mask.CAUSAL))[..., :N]
    want = []
    for b in range(B):
      row = []
      for t in range(T):
        # ∇L_t(Φ) = −Σ_{j<t} (y_j − Φ x_j) x_jᵀ
        grad = -sum(
          (jnp.outer(y[b, j] - phi_0 @ x[b, j], x[b, j]) for j in range(t)), jnp.zeros((N, N))
        )
        row.append((phi_0 - eta * grad) @ x[b, t])
      want.append(jnp.stack(row))
    want = jnp.stack(want)
  assert relative_error(out, want) <= 1e-5


def test_model_forward_matches_construction(seq):
  """ConstructedModel (mask, clip) with Prop-1 weights predicts GD-1 (no saturation here)."""
  eta = 0.02
  model = models.ConstructedModel(
    num_layers=1,
    num_heads=2,
    key_size=20,
    dim=4 * N,
    kind="linear",
    key=jax.random.key(2),
    input_mask=dyn.one_layer_input_mask(N),
  )
  w_q, w_k, w_v, w_p = models.prop1_weights(N, eta)
  model.w_q[...] = w_q[None]
  model.w_k[...] = w_k[None]
  model.w_v[...] = w_v[None]
  model.w_p[...] = w_p[None]
  with full_float32_matmuls():
    got = models.predict(model, dyn.constructed_tokens(seq.inputs), N)
    want = solvers.gd1_predict(seq.inputs, seq.targets, eta)
  assert float(jnp.max(jnp.abs(want))) < 4.0  # the ±4 clip is inactive
  assert relative_error(got, want) <= 1e-5


# ------------------------------------------------------------------------------- test 6


def test_chebyshev_neumann_limit_is_the_inverse():
  """α = 1, β = 0 is the truncated Neumann series of Â⁻¹: M_K/c → A⁻¹ (well-conditioned A)."""
  m = jax.random.normal(jax.random.key(3), (4, N, 3 * N))
  gram = m @ jnp.swapaxes(m, 1, 2) / (3 * N)
  rho = 1.0
  v = jax.random.normal(jax.random.key(4), (4, N))
  with full_float32_matmuls():
    got = solvers.chebyshev_apply(gram, rho, v, solvers.Chebyshev.neumann(300))
    want = jnp.linalg.solve(gram + rho * jnp.eye(N), v[..., None])[..., 0]
  assert relative_error(got, want) <= 1e-4


def test_chebyshev_recursion_against_matrix_form():
  """The vector recursion equals the code's matrix recursion T_k, M_k for arbitrary α, β."""
  m = jax.random.normal(jax.random.key(5), (N, 2 * N))
  gram, rho = m @ m.T, 0.01
  coeffs = solvers.Chebyshev(jnp.asarray([1.1, 3.0, 2.5]), jnp.asarray([0.0, 0.6, 0.4]))
  v = jax.random.normal(jax.random.key(6), (N,))
  a = gram + rho * jnp.eye(N)
  c = jnp.linalg.norm(a)
  a_hat = a / c
  eye = jnp.eye(N)
  t_k, m_prev, m_k = eye, eye, eye
  for alpha, beta in zip(coeffs.alpha, coeffs.beta):
    t_k = t_k @ (eye - alpha * a_hat)
    m_prev, m_k = m_k, m_k + t_k + beta * (m_k - m_prev)
  with full_float32_matmuls():
    got = solvers.chebyshev_apply(gram, rho, v, coeffs)
    want = m_k @ v / c
  assert relative_error(got, want) <= 1e-5


# ------------------------------------------------------------------------------- test 7


def test_prop2_layer_output(seq):
  """A Prop-2 preconditioning LSA layer outputs −α S_{t−1} S_{t−1}ᵀ x_t for the iterate x_t."""
  alpha = 0.7
  w = models.prop2_layer_weights(N, alpha)
  iterate = jax.random.normal(jax.random.key(7), (B, T, N))
  e = dyn.constructed_tokens(seq.inputs).at[..., :N].set(iterate)
  with full_float32_matmuls():
    got = linear_attention(e, *w, mask=Mask.CAUSAL)[..., :N]
    want = jnp.stack(
      [
        jnp.stack(
          [
            -alpha * _strict_sum_reference(seq.inputs[b], seq.targets[b], t)[1] @ iterate[b, t]
            for t in range(T)
          ]
        )
        for b in range(B)
      ]
    )
  assert relative_error(got, want) <= 1e-5
  np.testing.assert_array_equal(linear_attention(e, *w, mask=Mask.CAUSAL)[..., N:], 0.0)


# ------------------------------------------------------------------------------- test 8


def test_ridge_lsq_is_the_mesa_layer_with_identity_projections(seq):
  """Per-t ridge LSQ = mesa layer whose keys read s_{t'−1}, values s_{t'}, queries s_t, λ = 1/ρ."""
  from innerloop_core.mesa import mesa_layer

  rho = 1.0
  w_q, w_k, w_v, w_p = models.prop1_weights(N, 1.0)
  lam = jnp.full((w_q.shape[0],), 1.0 / rho)
  with full_float32_matmuls():
    e = dyn.constructed_tokens(seq.inputs) * dyn.one_layer_input_mask(N)
    got = mesa_layer(e, w_q, w_k, w_v, w_p, lam)[..., :N]
    want = solvers.ridge_lsq_predict(seq.inputs, seq.targets, rho)
  assert relative_error(got, want) <= 1e-4


def test_ridge_lsq_against_loop(seq):
  rho = 0.01
  got = solvers.ridge_lsq_predict(seq.inputs, seq.targets, rho)
  b, t = 2, 7
  cross, gram = _strict_sum_reference(seq.inputs[b], seq.targets[b], t)
  want = cross @ jnp.linalg.solve(gram + rho * jnp.eye(N), seq.inputs[b, t])
  assert relative_error(got[b, t], want) <= 1e-4
  np.testing.assert_array_equal(got[:, 0], 0.0)  # no pair at t = 1


# ------------------------------------------------------------------------------ test 10


def test_teachers_orthogonal_and_zero_predictor_and_noise_floor():
  """WᵀW = I (1e-5); the zero predictor's t = 1 loss is ½·10·⅓ = 1.667 within 2%; the oracle
  reaches the noise floor ½·10·0.01² = 5e-4."""
  key = jax.random.key(11)
  seq = dyn.linear_sequences(key, 8192, length=3)
  w = dyn.orthogonal_matrices(jax.random.split(key, 3)[0], 8192, N)
  eye = jnp.broadcast_to(jnp.eye(N), w.shape)
  assert float(jnp.max(jnp.abs(jnp.swapaxes(w, 1, 2) @ w - eye))) <= 1e-5
  zero = dyn.per_step_loss(jnp.zeros_like(seq.targets), seq.targets)
  assert abs(float(zero[0]) - 5 / 3) <= 0.02 * 5 / 3
  oracle = jnp.einsum("bij,btj->bti", w, seq.inputs)
  assert float(dyn.sequence_loss(oracle, seq.targets)) == pytest.approx(5e-4, rel=0.05)


# ---------------------------------------------------------------------- the other solvers


def test_line_search_eta_is_the_minimiser(seq):
  x, y = seq.inputs, seq.targets
  eta = solvers.line_search_eta(x, y)
  loss = lambda e: dyn.sequence_loss(solvers.gd1_predict(x, y, e), y)  # noqa: E731
  assert float(jax.grad(loss)(eta)) == pytest.approx(0.0, abs=1e-4)
  assert float(loss(eta)) < float(loss(eta * 1.1)) and float(loss(eta)) < float(loss(eta * 0.9))


def test_kernel_regression_limits(seq):
  x, y = seq.inputs, seq.targets
  uniform = solvers.kernel_regression_predict(x, y, 0.0)
  want = jnp.cumsum(y, axis=1)[:, 2] / 3  # mean of y_1..y_3 at t = 4
  assert relative_error(uniform[:, 3], want) <= 1e-5
  np.testing.assert_array_equal(uniform[:, 0], 0.0)
  sharp = solvers.kernel_regression_predict(x, y, 1e4)
  nearest = jnp.argmax(jnp.einsum("tn,sn->ts", x[0], x[0])[5, :5])
  assert relative_error(sharp[0, 5], y[0, nearest]) <= 1e-4


# ------------------------------------------------------------------------------ probes


def test_probe_mse_exact_for_affine_targets_and_in_sample_for_noise():
  """The probe fits affine maps exactly; on pure noise its in-sample error is the noise
  variance times (B − D − 1)/B (½ summed over dims), the reason the input probe reads 1.535
  rather than 1.667 at B = 256."""
  from innerloop_mesa_optimization.experiments import probe_mse

  k1, k2, k3 = jax.random.split(jax.random.key(12), 3)
  x = jax.random.normal(k1, (2000, 5))
  w = jax.random.normal(k2, (5, 2))
  assert probe_mse(x, x @ w + 3.0) <= 1e-10
  noise = jax.random.normal(k3, (2000, 2))
  assert probe_mse(x, noise) == pytest.approx(0.5 * 2 * (2000 - 6) / 2000, rel=0.1)

"""Analyses of trained recurrent networks: λ groups, output influence, pruning, probes.

Shape notation: B sequences, T time steps, N recurrent neurons, O outputs, P samples
(flattened (b, t) pairs), F probed features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core.recurrent import Gate, GatedRNNWeights, gated_rnn_readout

# λ thresholds of the sheet's checks C3/C4: "perfect memory" and "no memory".
LAM_HIGH = 0.99
LAM_LOW = 0.01
# Looser thresholds (ours) that report the same measures for λ clustered near 0 and 1 but not
# yet past 0.99 / 0.01 when training stops (sigmoid-parametrised λ only approaches them).
LAM_HIGH_LOOSE = 0.95
LAM_LOW_LOOSE = 0.05
# The probes (C5, E5) split neurons by their nearer mode: λ > 0.5 memory, λ < 0.5 memory-less.
LAM_SPLIT = 0.5


def normalised_mse(y_hat: jax.Array, y: jax.Array) -> jax.Array:
  """mean (ŷ − y)² / var(y) over every entry (sheet §9: thresholds need a normalised loss)."""
  return jnp.mean((y_hat - y) ** 2) / jnp.var(y)


def output_influence(w: GatedRNNWeights, h: jax.Array, gate: Gate, max_samples: int = 4096):
  """Per neuron i, the mean over samples of ‖∂y_t/∂h_t,i‖₂ (the readout's Jacobian column).

  h: [B, T, N] states. The readout is instantaneous in h_t, so this is the direct effect of
  neuron i on the current output. Returns [N].
  """
  flat = h.reshape(-1, h.shape[-1])[:max_samples]
  jac = jax.vmap(jax.jacfwd(lambda hp: gated_rnn_readout(hp, w, gate=gate)))(flat)  # [P, O, N]
  return jnp.mean(jnp.linalg.norm(jac, axis=1), axis=0)


def lambda_groups(lam: np.ndarray, high: float = LAM_HIGH, low: float = LAM_LOW):
  """Indices of the memory (λ > high), memory-less (λ < low) and intermediate neurons."""
  lam = np.asarray(lam)
  high, low = lam > high, lam < low
  return {
    "memory": np.flatnonzero(high),
    "memoryless": np.flatnonzero(low),
    "intermediate": np.flatnonzero(~(high | low)),
  }


def bimodal_fraction(
  lam: np.ndarray, influence: np.ndarray, high: float = LAM_HIGH, low: float = LAM_LOW
) -> float:
  """Share of the total output influence carried by neurons with λ > high or λ < low."""
  lam, influence = np.asarray(lam), np.asarray(influence)
  extreme = (lam > high) | (lam < low)
  return float(influence[extreme].sum() / max(influence.sum(), np.finfo(np.float32).tiny))


def prune_intermediate(
  w: GatedRNNWeights, high: float = LAM_HIGH, low: float = LAM_LOW
) -> GatedRNNWeights:
  """The network with every neuron of low ≤ λ ≤ high silenced (input gate zeroed: h_i ≡ 0)."""
  keep = (w.lam > high) | (w.lam < low)
  return w._replace(w_in_x=w.w_in_x * keep)


def probe_r2(activity: np.ndarray, features: np.ndarray, fit_fraction: float = 0.5) -> np.ndarray:
  """R² per feature of a least-squares linear probe (with bias) from activity to features.

  Fitted on the first `fit_fraction` of the samples, scored on the rest, so a probe cannot
  look good by fitting noise. activity: [P, N]; features: [P, F] -> R² [F].
  An empty activity (no neuron in the group) probes with the bias alone (R² ≈ 0).
  """
  activity = np.asarray(activity, np.float64)
  features = np.asarray(features, np.float64)
  p = activity.shape[0]
  split = int(p * fit_fraction)
  design = np.concatenate([activity, np.ones((p, 1))], axis=1)
  coef, *_ = np.linalg.lstsq(design[:split], features[:split], rcond=None)
  resid = features[split:] - design[split:] @ coef
  centred = features[split:] - features[split:].mean(axis=0)
  return 1.0 - (resid**2).sum(0) / np.maximum((centred**2).sum(0), np.finfo(np.float64).tiny)


def lsa_memory_features(teacher, x: jax.Array) -> np.ndarray:
  """The teacher's memories M_t,h = Σ_{s≤t} v_s k_sᵀ, flattened: [B·T, H·V·K]."""
  v = jnp.einsum("btd,hdv->bthv", x, teacher.w_v)
  k = jnp.einsum("btd,hdk->bthk", x, teacher.w_k)
  m = jnp.cumsum(jnp.einsum("bthv,bthk->bthvk", v, k), axis=1)
  return np.asarray(m.reshape(-1, int(np.prod(m.shape[2:]))))


def lsa_query_features(teacher, x: jax.Array) -> np.ndarray:
  """The teacher's queries q_t,h flattened: [B·T, H·K]."""
  q = jnp.einsum("btd,hdk->bthk", x, teacher.w_q)
  return np.asarray(q.reshape(-1, q.shape[2] * q.shape[3]))


def icl_memory_features(tokens: jax.Array, input_dim: int) -> np.ndarray:
  """Σ_{s≤t} y_s x_sᵀ at every position, flattened: tokens [B, T, Dx+Dy] -> [B·T, Dy·Dx]."""
  x, y = tokens[..., :input_dim], tokens[..., input_dim:]
  m = jnp.cumsum(jnp.einsum("bti,btj->btij", y, x), axis=1)
  return np.asarray(m.reshape(-1, m.shape[2] * m.shape[3]))


def icl_input_features(tokens: jax.Array, input_dim: int) -> np.ndarray:
  """The current x_t: [B·T, Dx]."""
  return np.asarray(tokens[..., :input_dim].reshape(-1, input_dim))

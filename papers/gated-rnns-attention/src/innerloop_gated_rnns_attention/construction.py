"""Exact constructions: causal linear self-attention and 1-step GD as gated linear RNNs.

Shape notation: D token width, H heads, K key size, V value size, N recurrent neurons,
M output-gate units, O output width, Dx/Dy regression input/output width. Weights follow
``innerloop_core.recurrent.GatedRNNWeights`` ((in, out) layout, x̃ = [x; 1]).

Causal LSA (sheet §4):  y_t = Σ_h P_h M_t,h q_t,h,  M_t,h = Σ_{s≤t} v_s,h k_s,hᵀ.
Two ways to hold it in a diagonal recurrence:
  GENERIC     per head, V·K memory neurons (λ = 1) with a_t = v_t[i] k_t[j] = M_t[i, j]
              increments and K query neurons (λ = 0) holding q_t[j]; output gate (h, i, j)
              multiplies M_t[i, j] by q_t[j] and the readout applies P_h.
              N = H(VK + K), M = HVK.
  COMPRESSED  D(D+1)/2 memory neurons hold S_t = Σ_{s≤t} x_s x_sᵀ (upper triangle) and D
              query neurons hold x_t; y_t = Σ_h P_h W_V,hᵀ S_t W_K,h W_Q,hᵀ x_t is bilinear
              in (S_t, x_t), so the readout absorbs every head: N = D(D+1)/2 + D, any H.
1-step GD on in-context regression (ŷ = (η/N_ctx) Σ_t y_t x_tᵀ x_q) needs only Σ_t y_t x_tᵀ
(Dx·Dy neurons, λ = 1) and the current x (Dx neurons, λ = 0): N = Dx·Dy + Dx.
"""

from __future__ import annotations

import enum
import itertools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from innerloop_core.config import parse_enum
from innerloop_core.recurrent import GatedRNNWeights


class Form(enum.Enum):
  GENERIC = "generic"
  COMPRESSED = "compressed"


class Construction(NamedTuple):
  weights: GatedRNNWeights
  memory: np.ndarray  # indices of the λ = 1 neurons
  query: np.ndarray  # indices of the λ = 0 neurons


def lsa_size(dim: int, num_heads: int, key_size: int, value_size: int, form: Form | str):
  """(N recurrent neurons, M output-gate units) of the construction."""
  form = parse_enum(form, Form, "form")
  if form is Form.GENERIC:
    return num_heads * (value_size * key_size + key_size), num_heads * value_size * key_size
  pairs = dim * (dim + 1) // 2
  return pairs + dim, pairs * dim


def _unit(width: int, index: int) -> np.ndarray:
  e = np.zeros(width)
  e[index] = 1.0
  return e


def _generic(w_q, w_k, w_v, w_p):
  h_, d, k_ = w_q.shape
  v_ = w_v.shape[-1]
  n, m = lsa_size(d, h_, k_, v_, Form.GENERIC)
  w_in_x, w_in_g = np.zeros((d + 1, n)), np.zeros((d + 1, n))
  lam = np.zeros(n)
  w_out_x, w_out_g = np.zeros((n, m)), np.zeros((n, m))
  w_read = np.zeros((m, d))
  memory, query = [], []
  per_head = v_ * k_ + k_
  for h in range(h_):
    mem0, qry0, out0 = h * per_head, h * per_head + v_ * k_, h * v_ * k_
    for j in range(k_):
      w_in_x[:d, qry0 + j] = w_q[h, :, j]  # q_t[j]
      w_in_g[d, qry0 + j] = 1.0  # times the constant 1
      query.append(qry0 + j)
    for i, j in itertools.product(range(v_), range(k_)):
      unit, out = mem0 + i * k_ + j, out0 + i * k_ + j
      w_in_x[:d, unit] = w_v[h, :, i]  # v_t[i]
      w_in_g[:d, unit] = w_k[h, :, j]  # k_t[j]
      lam[unit] = 1.0
      memory.append(unit)
      w_out_x[unit, out] = 1.0  # M_t[i, j]
      w_out_g[qry0 + j, out] = 1.0  # q_t[j]
      w_read[out] = w_p[h, i]  # P_h's column i, summed over j by the readout
  return w_in_x, w_in_g, lam, w_out_x, w_out_g, w_read, memory, query


def _compressed(w_q, w_k, w_v, w_p):
  h_, d, _ = w_q.shape
  pairs = [(a, b) for a in range(d) for b in range(a, d)]
  n, m = lsa_size(d, h_, w_q.shape[-1], w_v.shape[-1], Form.COMPRESSED)
  w_in_x, w_in_g = np.zeros((d + 1, n)), np.zeros((d + 1, n))
  lam = np.zeros(n)
  w_out_x, w_out_g = np.zeros((n, m)), np.zeros((n, m))
  # y[o] = Σ_{a,b,c} A[o, a, b, c] S[a, b] x[c] with A = Σ_h (W_V P)_h[a, o] (W_K W_Qᵀ)_h[b, c];
  # S is symmetric, so the (a, b) and (b, a) terms share one neuron.
  pv = np.einsum("hdv,hvo->hdo", w_v, w_p)  # [H, D, O]: x_a's route to the output
  kq = np.einsum("hbk,hck->hbc", w_k, w_q)  # [H, D, D]: k·q as a bilinear form in (x_b, x_c)
  coef = np.einsum("hao,hbc->oabc", pv, kq)  # [O, D, D, D]
  w_read = np.zeros((m, d))
  query = list(range(len(pairs), n))
  for c in range(d):
    w_in_x[c, query[c]] = 1.0  # x_t[c]
    w_in_g[d, query[c]] = 1.0  # times the constant 1
  for p, (a, b) in enumerate(pairs):
    w_in_x[a, p] = 1.0
    w_in_g[b, p] = 1.0  # a_t = x_t[a] x_t[b], summed by λ = 1 into S_t[a, b]
    lam[p] = 1.0
    for c in range(d):
      out = p * d + c
      w_out_x[p, out] = 1.0
      w_out_g[query[c], out] = 1.0
      w_read[out] = coef[:, a, b, c] + (coef[:, b, a, c] if a != b else 0.0)
  return w_in_x, w_in_g, lam, w_out_x, w_out_g, w_read, list(range(len(pairs))), query


def lsa_to_gated_rnn(w_q, w_k, w_v, w_p, form: Form | str = Form.GENERIC) -> Construction:
  """A gated linear RNN computing the causal multi-head LSA (w_q, w_k, w_v, w_p).

  Args:
    w_q, w_k: [H, D, K]; w_v: [H, D, V]; w_p: [H, V, D] (``attention``'s layout).
    form: ``Form.GENERIC`` or ``Form.COMPRESSED`` (module docstring).
  Returns:
    The weights (λ exactly 0 or 1; evaluate with ``recurrent.gated_rnn``, Gate.LINEAR) and
    the indices of the memory (λ = 1) and query (λ = 0) neurons.
  """
  form = parse_enum(form, Form, "form")
  # Built in float64 numpy: the construction is exact, rounding happens only at evaluation.
  arrays = [np.asarray(w, np.float64) for w in (w_q, w_k, w_v, w_p)]
  if arrays[0].ndim != 3 or arrays[0].shape != arrays[1].shape:
    raise ValueError(
      f"w_q and w_k must both be [H, D, K]; got {arrays[0].shape}, {arrays[1].shape}"
    )
  build = _generic if form is Form.GENERIC else _compressed
  *w, memory, query = build(*arrays)
  dtype = jnp.result_type(w_q)
  weights = GatedRNNWeights(*(jnp.asarray(a, dtype) for a in w))
  return Construction(weights, np.asarray(memory), np.asarray(query))


def gd_size(input_dim: int, output_dim: int) -> tuple[int, int]:
  """(N, M) of the 1-step-GD RNN: N* = Dx·Dy + Dx neurons, Dx·Dy output-gate units."""
  return input_dim * output_dim + input_dim, input_dim * output_dim


def gd_to_gated_rnn(eta: float, num_context: int, input_dim: int, output_dim: int) -> Construction:
  """The gated RNN whose output at the query token is 1-step GD's prediction from W_0 = 0.

  Tokens are e_t = [x_t, y_t] (width Dx + Dy), the query token [x_q, 0] last. Memory neuron
  (i, j) sums y_t[i] x_t[j] (the query adds 0 to it); query neuron j holds x_t[j]; the readout
  forms ŷ_i = (η / N_ctx) Σ_j (Σ_t y_t[i] x_t[j]) x_q[j].
  """
  dx, dy = input_dim, output_dim
  d = dx + dy
  n, m = gd_size(dx, dy)
  w_in_x, w_in_g = np.zeros((d + 1, n)), np.zeros((d + 1, n))
  lam = np.zeros(n)
  w_out_x, w_out_g = np.zeros((n, m)), np.zeros((n, m))
  w_read = np.zeros((m, dy))
  query = list(range(dx * dy, n))
  for j in range(dx):
    w_in_x[j, query[j]] = 1.0
    w_in_g[d, query[j]] = 1.0
  for i, j in itertools.product(range(dy), range(dx)):
    unit = i * dx + j
    w_in_x[dx + i, unit] = 1.0  # y_t[i]
    w_in_g[j, unit] = 1.0  # x_t[j]
    lam[unit] = 1.0
    w_out_x[unit, unit] = 1.0
    w_out_g[query[j], unit] = 1.0
    w_read[unit, i] = eta / num_context
  weights = GatedRNNWeights(
    *(jnp.asarray(a, jnp.float32) for a in (w_in_x, w_in_g, lam, w_out_x, w_out_g, w_read))
  )
  return Construction(weights, np.arange(dx * dy), np.asarray(query))

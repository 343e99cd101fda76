"""The mesa layer (von Oswald et al. 2023): attention that solves a ridge regression per token.

Shape notation (used in every docstring below):
    B  batch (sequences)
    T  tokens per sequence
    D  token width (the residual stream)
    H  heads
    K  key (and query) size per head: the regression's input dimension
    V  value size per head: the regression's output dimension

Per head and token t, the layer fits the linear map from keys to values seen so far,

    Φ̂_t = argmin_Φ ½ Σ_{t'≤t} ‖v_t' − Φ k_t'‖² + ‖Φ‖²_F / (2λ) = V_t K_tᵀ R_t,
    R_t = (K_t K_tᵀ + I/λ)⁻¹,

and outputs Φ̂_t q_t = V_t K_tᵀ (R_t q_t): causal linear attention whose query is the
"preconditioned" q̃_t = R_t q_t. λ is the paper's: the regulariser is 1/λ and R_0 = λI; it
gets no positivity transform (the authors' code has none). Δe_t / λ → causal linear
attention as λ → 0 (then R_t → λI).

Forget factors γ_t ∈ (0, 1] discount the past: example t' gets weight Π_{t''=t'+1..t} γ_t'' in
the sum and the regulariser gets weight Π_{t''=1..t} γ_t''. With A_t = R_t⁻¹ that is
A_t = γ_t A_{t−1} + k_t k_tᵀ (A_0 = I/λ), and the values accumulate as
S_t = γ_t S_{t−1} + v_t k_tᵀ, so the output is S_t q̃_t.

Recursive least squares (Sherman–Morrison) gives R_t from R_{t−1} in O(K²):
    R_t = γ_t⁻¹ (R_{t−1} − R_{t−1} k_t k_tᵀ R_{t−1} / (γ_t + k_tᵀ R_{t−1} k_t))    (``rls_update``)
and it runs backwards exactly as well:
    R_{t−1} = γ_t (R_t − R_t k_t k_tᵀ R_t / (k_tᵀ R_t k_t − 1))                    (``rls_downdate``)
which is what lets ``MesaImpl.SCAN_REVERSE`` differentiate the scan keeping only R_T.

Naming: these are the paper's keys and values (k = regression input, v = target). The
authors' code swaps the names (its ``v_proj`` makes the regression input and its ``k_proj``
the target); a port of their weights must swap w_k and w_v.

AUTO rule (``_auto_impl``): SCAN_REVERSE on CPU, GRAM_SOLVE on an accelerator. Measured with
``benchmarks/mesa_layer.py --reps 5`` under the CPU lock (jax 0.10.2, 2-core CPU, load
average 1.8 at the start, 3.5 at the end; float32, H = 4, K = V = 20, D = 40; gradients of
all six inputs of ``mesa_layer``; ms per fwd+bwd, median; error = max relative gradient error
against SCAN in float64):
    B     T     scan            scan_reverse     gram_solve
    64    50      77 (2.3e-5)     38 (1.1e-4)     136 (2.0e-6)
    256   50     279 (1.7e-5)    192 (1.3e-4)    1122 (8.3e-6)
    64    224    548 (3.3e-5)    279 (2.5e-4)    1200 (1.3e-6)
    64    1024  1757 (8.2e-4)   1222 (9.0e-4)    6088 (4.1e-6)
The custom VJP wins everywhere on CPU (1.45-2.1x over autodiff through the scan, which writes
and re-reads every R_t), and the parallel form loses 3.7-5.8x: it does O(K³) per token where
the scans do O(K²), and a 2-core CPU has no idle width for its parallelism to use. Compile
times: ~1-4 s for the scans, 5-14 s for GRAM_SOLVE (its unrolled K-step Cholesky). Accuracy:
the float32 forward of every implementation is within ~1e-6 of float64 at T = 1024 (a B = 8
rerun), but the scans' gradients lose digits with T: at T = 1024 λ's gradient (a small sum
with cancellation) is off by 4e-4 (SCAN) and 1e-3 (SCAN_REVERSE), and SCAN_REVERSE's rebuilt
R_t add ~5e-4 to the gradient of e (per-input errors in a B = 8 rerun, SCAN_REVERSE: 5e-4,
6e-5, 3e-4, 1e-6, 1e-6, 1e-3 for e, W_q, W_k, W_v, W_p, λ). GRAM_SOLVE stays at ~1e-6, so
it is the choice when gradient accuracy at long T matters more than speed.
On GPU (``--quick``, jax 0.11.2, one NVIDIA H200, 2026-11-26; the lease ended before the
larger sizes ran) at B = 64, T = 50: SCAN 1.9 ms, SCAN_REVERSE 1.6 ms, GRAM_SOLVE 0.6 ms per
fwd+bwd. There the T sequential steps of a scan are kernel launches on an idle chip, and the
parallel form is 2.7x faster, so AUTO takes GRAM_SOLVE. Every implementation's gradient error
there is ~1e-2, not the CPU's 1e-4..1e-6, as expected if float32 products run as TF32 (JAX's
default matmul precision on that chip; not isolated in that run); the exactness tests run on CPU.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
from jax import lax

from innerloop_core.config import parse_enum


class MesaImpl(enum.Enum):
  """How ``mesa_attention`` computes the preconditioned queries q̃_t = R_t q_t."""

  # lax.scan of the Sherman–Morrison update (O(T·K²) work, T dependent steps); gradients by
  # autodiff through the scan, which stores every R_t ([B, H, T, K, K]).
  SCAN = "scan"
  # The same forward scan with a custom VJP: the backward scan rebuilds R_{t−1} from R_t by
  # ``rls_downdate``, so only q, k, γ and R_T are kept (O(B·H·K²) instead of O(B·H·T·K²)).
  SCAN_REVERSE = "scan_reverse"
  # Parallel in t: cumulative Gram matrices A_t = Σ k kᵀ + I/λ for every t, one batched
  # Cholesky solve A_t q̃_t = q_t (its VJP: one more solve); autodiff through the Gram sums.
  # O(T·K³) work and O(B·H·T·K²) memory, but no sequential loop over T.
  GRAM_SOLVE = "gram_solve"
  # Chosen per backend by ``_auto_impl`` (see the module docstring for the measurements).
  AUTO = "auto"


def _auto_impl(backend: str, num_tokens: int) -> MesaImpl:
  """The implementation AUTO resolves to on `backend` for T = `num_tokens`."""
  # T is an argument so that a length-dependent rule can be added without changing callers.
  del num_tokens
  if backend == "cpu":
    return MesaImpl.SCAN_REVERSE  # fastest at every measured size (module docstring)
  return MesaImpl.GRAM_SOLVE  # 2.7x faster than SCAN_REVERSE on an H200 at T = 50 (docstring)


def _as_impl(value) -> MesaImpl:
  return parse_enum(value, MesaImpl, "impl")


# -------------------------------------------------------------------------------------------
# One step of recursive least squares, forwards and backwards
# -------------------------------------------------------------------------------------------


def _outer(x: jax.Array, y: jax.Array) -> jax.Array:
  return x[..., :, None] * y[..., None, :]


def _matvec(m: jax.Array, x: jax.Array) -> jax.Array:
  return jnp.einsum("...ij,...j->...i", m, x)


def _dot(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.sum(x * y, axis=-1)


def rls_update(r: jax.Array, k: jax.Array, gamma: jax.Array | None = None) -> jax.Array:
  """R_t from R_{t−1} after seeing key k_t (Sherman–Morrison).

  Args:
    r: R_{t−1} [..., K, K] (symmetric).
    k: k_t [..., K].
    gamma: γ_t [...] or None (no forgetting, γ_t = 1).
  Returns:
    R_t [..., K, K] = (γ_t R_{t−1}⁻¹ + k_t k_tᵀ)⁻¹. uuᵀ is exactly symmetric in floating
    point, so a symmetric R stays symmetric.
  """
  u = _matvec(r, k)
  denom = _dot(k, u) + (1.0 if gamma is None else gamma)
  r = r - _outer(u, u) / denom[..., None, None]
  return r if gamma is None else r / gamma[..., None, None]


def rls_downdate(r: jax.Array, k: jax.Array, gamma: jax.Array | None = None) -> jax.Array:
  """R_{t−1} from R_t and k_t, the inverse of ``rls_update``. Shapes as there.

  Divides by k_tᵀ R_t k_t − 1 = −γ_t / (γ_t + k_tᵀ R_{t−1} k_t), which is small when k_t is
  large against the regulariser: the reverse recursion loses digits there (sheet pitfall 7).
  """
  g = _matvec(r, k)  # the RLS gain R_t k_t
  r = r - _outer(g, g) / (_dot(k, g) - 1.0)[..., None, None]
  return r if gamma is None else r * gamma[..., None, None]


# -------------------------------------------------------------------------------------------
# q̃_t = R_t q_t, three ways
# -------------------------------------------------------------------------------------------


def _time_major(x: jax.Array | None) -> jax.Array | None:
  """[B, H, T, ...] -> [T, B, H, ...] (lax.scan scans the leading axis)."""
  return None if x is None else jnp.moveaxis(x, 2, 0)


def _initial_inverse(lam: jax.Array, batch: int, key_size: int) -> jax.Array:
  """R_0 = λI per head, broadcast to [B, H, K, K]."""
  eye = jnp.eye(key_size, dtype=lam.dtype)
  r0 = lam[:, None, None] * eye
  return jnp.broadcast_to(r0, (batch,) + r0.shape)


def _forward_scan(q, k, lam, gamma):
  """(q̃ [B, H, T, K], R_T [B, H, K, K]) by the Sherman–Morrison scan."""
  r0 = _initial_inverse(lam, q.shape[0], q.shape[-1])

  def step(r, xs):
    q_t, k_t, gamma_t = xs
    r = rls_update(r, k_t, gamma_t)
    return r, _matvec(r, q_t)

  r_last, q_tilde = lax.scan(step, r0, (_time_major(q), _time_major(k), _time_major(gamma)))
  return jnp.moveaxis(q_tilde, 0, 2), r_last


def _scan_queries(q, k, lam, gamma):
  return _forward_scan(q, k, lam, gamma)[0]


@jax.custom_vjp
def _scan_reverse_queries(q, k, lam, gamma):
  return _forward_scan(q, k, lam, gamma)[0]


def _scan_reverse_fwd(q, k, lam, gamma):
  q_tilde, r_last = _forward_scan(q, k, lam, gamma)
  return q_tilde, (q, k, gamma, r_last, lam)


def _scan_reverse_bwd(res, dq_tilde):
  """Reverse scan t = T..1 carrying (R_t, Ḡ_t), Ḡ_t = ∂L/∂R_t through every later step.

  With g = R_t k_t (the gain) and A = R⁻¹, R_t = (γ_t A_{t−1} + k_t k_tᵀ)⁻¹ gives
    ∂L/∂q_t     = R_t ∂L/∂q̃_t                     (R symmetric)
    Ḡ_t        += ∂L/∂q̃_t q_tᵀ                     (q̃_t = R_t q_t)
    ∂L/∂k_t     = −R_t (Ḡ_t + Ḡ_tᵀ) g
    ∂L/∂γ_t     = −(⟨Ḡ_t, R_t⟩ − gᵀ Ḡ_t g) / γ_t
    Ḡ_{t−1}     = γ_t⁻¹ (I − k_t gᵀ) Ḡ_t (I − g k_tᵀ)  (A_{t−1} R_t = γ_t⁻¹ (I − k_t gᵀ))
  and ∂L/∂λ = tr Ḡ_0 (R_0 = λI), summed over the batch. Every step is O(K²).
  """
  q, k, gamma, r_last, lam = res
  with_gamma = gamma is not None

  def step(carry, xs):
    r, gbar = carry
    q_t, k_t, dqt_t, gamma_t = xs
    dq_t = _matvec(r, dqt_t)
    gbar = gbar + _outer(dqt_t, q_t)
    g = _matvec(r, k_t)
    gbar_g = _matvec(gbar, g)  # Ḡ g
    g_gbar = jnp.einsum("...i,...ij->...j", g, gbar)  # gᵀ Ḡ
    dk_t = -_matvec(r, gbar_g + g_gbar)
    g_gbar_g = _dot(g, gbar_g)
    prev = (
      gbar
      - _outer(k_t, g_gbar)
      - _outer(gbar_g, k_t)
      + g_gbar_g[..., None, None] * _outer(k_t, k_t)
    )
    if with_gamma:
      dgamma_t = -(jnp.sum(gbar * r, axis=(-2, -1)) - g_gbar_g) / gamma_t
      prev = prev / gamma_t[..., None, None]
    else:
      dgamma_t = None
    return (rls_downdate(r, k_t, gamma_t), prev), (dq_t, dk_t, dgamma_t)

  xs = (_time_major(q), _time_major(k), _time_major(dq_tilde), _time_major(gamma))
  (_, gbar0), (dq, dk, dgamma) = lax.scan(step, (r_last, jnp.zeros_like(r_last)), xs, reverse=True)
  dlam = jnp.trace(gbar0, axis1=-2, axis2=-1).sum(0).astype(lam.dtype)
  dgamma = None if dgamma is None else jnp.moveaxis(dgamma, 0, 2)
  return jnp.moveaxis(dq, 0, 2), jnp.moveaxis(dk, 0, 2), dlam, dgamma


_scan_reverse_queries.defvjp(_scan_reverse_fwd, _scan_reverse_bwd)


def _decayed_cumsum(decay: jax.Array | None, x: jax.Array) -> jax.Array:
  """y_n = decay_n y_{n−1} + x_n (y_0 = 0) along axis 2: decay [B, H, N] (None: 1), x
  [B, H, N, P, Q]. A plain cumsum without decay; else an associative scan of (decay, x) pairs,
  "a then b" = (d_a d_b, d_b x_a + x_b) (scans.linear_scan's operator with a scalar decay
  per matrix, which linear_scan would need broadcast to the matrices' full shape)."""
  if decay is None:
    return jnp.cumsum(x, axis=2)

  def combine(a, b):
    return a[0] * b[0], b[0][..., None, None] * a[1] + b[1]

  return lax.associative_scan(combine, (decay, x), axis=2)[1]


def _cumulative_gram(k, lam, gamma):
  """A_t = γ_t A_{t−1} + k_t k_tᵀ, A_0 = I/λ, for every t: [B, H, T, K, K]."""
  kk = _outer(k, k)
  eye = jnp.eye(k.shape[-1], dtype=k.dtype)
  a0 = (1.0 / lam)[:, None, None] * eye  # [H, K, K]
  if gamma is None:
    return jnp.cumsum(kk, axis=2) + a0[:, None]
  # A_0 enters as γ_1 A_0 in the first step.
  return _decayed_cumsum(gamma, kk.at[:, :, 0].add(gamma[:, :, 0, None, None] * a0))


def _cholesky(a: jax.Array) -> jax.Array:
  """Lower Cholesky factor of SPD matrices [..., K, K], column by column (K unrolled steps).

  Plain jnp instead of jnp.linalg.cholesky / cho_solve: on CPU those call LAPACK kernels that
  split large batches over XLA's intra-op thread pool and wait for the pieces, and with two
  such calls running at once on a 2-thread pool (the backward pass has several) jax 0.10.2
  deadlocks (seen at B = 256, T = 50; the stack ends in lapack_strsm_ffi / ParallelBatchMap).
  """
  size = a.shape[-1]
  chol = jnp.zeros_like(a)
  for j in range(size):
    col = a[..., j:, j] - jnp.einsum("...ik,...k->...i", chol[..., j:, :j], chol[..., j, :j])
    chol = chol.at[..., j:, j].set(col / jnp.sqrt(col[..., :1]))
  return chol


def _cholesky_solve(chol: jax.Array, b: jax.Array) -> jax.Array:
  """x with L Lᵀ x = b: chol L [..., K, K], b [..., K] (forward, then back substitution)."""
  size = b.shape[-1]
  y = []
  for i in range(size):
    partial = b[..., i] - sum((chol[..., i, j] * y[j] for j in range(i)), jnp.zeros_like(b[..., i]))
    y.append(partial / chol[..., i, i])
  x = [None] * size
  for i in reversed(range(size)):
    rest = sum((chol[..., j, i] * x[j] for j in range(i + 1, size)), jnp.zeros_like(b[..., i]))
    x[i] = (y[i] - rest) / chol[..., i, i]
  return jnp.stack(x, axis=-1)


@jax.custom_vjp
def _spd_solve(a: jax.Array, b: jax.Array) -> jax.Array:
  """A⁻¹ b for symmetric positive definite A [..., K, K], b [..., K]."""
  return _cholesky_solve(_cholesky(a), b)


def _spd_solve_fwd(a, b):
  chol = _cholesky(a)
  x = _cholesky_solve(chol, b)
  return x, (chol, x)


def _spd_solve_bwd(res, dx):
  # x = A⁻¹ b: ∂L/∂b = A⁻ᵀ ∂L/∂x = A⁻¹ ∂L/∂x (A symmetric), ∂L/∂A = −∂L/∂b xᵀ. Reusing the
  # factor keeps the backward at two substitutions, with no autodiff through the loops.
  chol, x = res
  db = _cholesky_solve(chol, dx)
  return -_outer(db, x), db


_spd_solve.defvjp(_spd_solve_fwd, _spd_solve_bwd)


def _gram_solve_queries(q, k, lam, gamma):
  return _spd_solve(_cumulative_gram(k, lam, gamma), q)


def rls_queries(
  q: jax.Array,
  k: jax.Array,
  lam: jax.Array,
  *,
  gamma: jax.Array | None = None,
  impl: MesaImpl | str = MesaImpl.AUTO,
) -> jax.Array:
  """The preconditioned queries q̃_t = R_t q_t, R_t = (K_t K_tᵀ + I/λ)⁻¹ (forget-weighted).

  Args and shapes as ``mesa_attention`` (without v). Returns q̃ [B, H, T, K].
  """
  impl = _as_impl(impl)
  _validate(q, k, None, lam, gamma)
  q, k, lam, gamma = _promote(q, k, lam, gamma)
  if impl is MesaImpl.AUTO:
    impl = _auto_impl(jax.default_backend(), q.shape[2])
  if impl is MesaImpl.SCAN:
    return _scan_queries(q, k, lam, gamma)
  if impl is MesaImpl.SCAN_REVERSE:
    return _scan_reverse_queries(q, k, lam, gamma)
  return _gram_solve_queries(q, k, lam, gamma)


# -------------------------------------------------------------------------------------------
# The layer
# -------------------------------------------------------------------------------------------


def _validate(q, k, v, lam, gamma) -> None:
  if q.ndim != 4:
    raise ValueError(f"q must have shape [B, H, T, K]; got {q.shape}")
  if k.shape != q.shape:
    raise ValueError(f"k must have the shape of q {q.shape} ([B, H, T, K]); got {k.shape}")
  if v is not None and (v.ndim != 4 or v.shape[:3] != q.shape[:3]):
    raise ValueError(f"v must have shape [B, H, T, V] = {q.shape[:3]} + (V,); got {v.shape}")
  if lam.shape != (q.shape[1],):
    raise ValueError(f"lam must have shape [H] = ({q.shape[1]},); got {lam.shape}")
  if gamma is not None and gamma.shape != q.shape[:3]:
    raise ValueError(f"gamma must have shape [B, H, T] = {q.shape[:3]}; got {gamma.shape}")


def _promote(*arrays):
  dtype = jnp.result_type(*(a for a in arrays if a is not None))
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.result_type(float)
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def _decayed_causal_attention(q_tilde, k, v, gamma, chunk_size):
  """o_t = Σ_{t'≤t} (Π_{t''=t'+1..t} γ_t'') (k_t'·q̃_t) v_t' = S_t q̃_t: [B, H, T, V].

  The paper's "linear attention with query R_t q_t", in chunks of C tokens: inside a chunk the
  masked [C, C] scores; across chunks the state S entering each chunk (a decayed cumulative
  sum of the chunks' Σ v kᵀ). T <= C is the plain quadratic form; longer sequences cost
  O(T·C) instead of O(T²) and never hold a [T, T] matrix.
  """
  batch, heads, num_tokens, _ = q_tilde.shape
  c = min(chunk_size, num_tokens)
  m = -(-num_tokens // c)
  pad = m * c - num_tokens
  if pad:  # zero keys/values and γ = 1 after the end change nothing before it
    widths = [(0, 0), (0, 0), (0, pad), (0, 0)]
    q_tilde, k, v = (jnp.pad(x, widths) for x in (q_tilde, k, v))
    gamma = None if gamma is None else jnp.pad(gamma, widths[:3], constant_values=1.0)
  q_tilde, k, v = (x.reshape(batch, heads, m, c, x.shape[-1]) for x in (q_tilde, k, v))
  causal = jnp.tril(jnp.ones((c, c), dtype=bool))
  scores = jnp.einsum("bhmtk,bhmsk->bhmts", q_tilde, k)
  if gamma is None:
    scores = jnp.where(causal, scores, 0.0)
    chunk_state = jnp.einsum("bhmsv,bhmsk->bhmvk", v, k)  # Σ_s v_s k_sᵀ per chunk
    chunk_decay = from_start = None
  else:
    # Π_{t'' in (t', t]} γ = exp(c_t − c_t'), c the within-chunk cumulative log γ. Masked
    # before exp: above the diagonal c_t − c_t' > 0 and could overflow.
    log_cum = jnp.cumsum(jnp.log(gamma.reshape(batch, heads, m, c)), axis=-1)
    log_decay = jnp.where(causal, log_cum[..., :, None] - log_cum[..., None, :], -jnp.inf)
    scores = scores * jnp.exp(log_decay)
    to_end = jnp.exp(log_cum[..., -1:] - log_cum)  # Π_{t'' in (s, end of chunk]} γ
    chunk_state = jnp.einsum("bhmsv,bhmsk,bhms->bhmvk", v, k, to_end)
    chunk_decay = jnp.exp(log_cum[..., -1])  # [B, H, M]
    from_start = jnp.exp(log_cum)  # Π_{t'' in [start, t]} γ
  out = jnp.einsum("bhmts,bhmsv->bhmtv", scores, v)
  if m > 1:
    # State entering chunk n: S_in,n = d_{n−1} S_in,n−1 + chunk_state_{n−1} (S_in,1 = 0).
    state_in = _decayed_cumsum(chunk_decay, chunk_state)
    state_in = jnp.pad(state_in[:, :, :-1], [(0, 0), (0, 0), (1, 0), (0, 0), (0, 0)])
    carried = jnp.einsum("bhmvk,bhmtk->bhmtv", state_in, q_tilde)
    out = out + (carried if from_start is None else carried * from_start[..., None])
  return out.reshape(batch, heads, m * c, -1)[:, :, :num_tokens]


def mesa_attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  lam: jax.Array,
  *,
  gamma: jax.Array | None = None,
  impl: MesaImpl | str = MesaImpl.AUTO,
  chunk_size: int = 64,
) -> jax.Array:
  """Per-head mesa attention: o_t = V_t K_tᵀ R_t q_t, R_t = (K_t K_tᵀ + I/λ)⁻¹.

  Args:
    q, k: queries and keys [B, H, T, K] (k = the regression input; the authors' code calls
      the projection making it ``v_proj``, pitfall 12 of the sheet).
    v: values [B, H, T, V] (the regression target).
    lam: λ [H], R_0 = λI (regulariser 1/λ), used as given (no positivity transform).
    gamma: forget factors γ [B, H, T] in (0, 1], or None (γ ≡ 1, plain RLS).
    impl: how q̃_t = R_t q_t is computed (``MesaImpl`` or its string value).
    chunk_size: C, tokens per block of the output sum Σ_t' (k_t'·q̃_t) v_t' (blocks of
      [C, C] scores plus a carried state; any T, the tail is padded).
  Returns:
    o [B, H, T, V]; token t depends on tokens 1..t only.
  """
  impl = _as_impl(impl)
  _validate(q, k, v, lam, gamma)
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"chunk_size must be an int >= 1; got {chunk_size!r}")
  q, k, v, lam, gamma = _promote(q, k, v, lam, gamma)
  q_tilde = rls_queries(q, k, lam, gamma=gamma, impl=impl)
  return _decayed_causal_attention(q_tilde, k, v, gamma, chunk_size)


def mesa_layer(
  e: jax.Array,
  w_q: jax.Array,
  w_k: jax.Array,
  w_v: jax.Array,
  w_p: jax.Array,
  lam: jax.Array,
  *,
  gamma: jax.Array | None = None,
  impl: MesaImpl | str = MesaImpl.AUTO,
  qk_features: jax.Array | None = None,
  chunk_size: int = 64,
) -> jax.Array:
  """Mesa self-attention increment Δe_t = Σ_h P_h V_t K_tᵀ R_t q_t (per-head ridge solve).

  Args:
    e: tokens [B, T, D].
    w_q, w_k: [H, D + P, K]; w_v: [H, D, V]; w_p: [H, V, D] (the layout of ``attention``).
    lam: λ [H].
    gamma: forget factors [B, H, T] in (0, 1], or None.
    impl: see ``MesaImpl``.
    qk_features: extra features [T, P] or [B, T, P] (e.g. a positional encoding)
      concatenated to e for the queries and keys only; None means P = 0.
    chunk_size: see ``mesa_attention``.
  Returns:
    Δe [B, T, D].
  """
  if e.ndim != 3:
    raise ValueError(f"e must have shape [B, T, D]; got {e.shape}")
  qk_src = with_features(e, qk_features)
  h, d_qk, key_size = w_q.shape
  if w_k.shape != w_q.shape:
    raise ValueError(f"w_k must have the shape of w_q {w_q.shape}; got {w_k.shape}")
  if qk_src.shape[-1] != d_qk:
    raise ValueError(f"w_q's input width {d_qk} does not match the query input's {qk_src.shape}")
  d = e.shape[-1]
  if w_v.shape[:2] != (h, d) or w_p.shape != (h, w_v.shape[2], d):
    raise ValueError(
      f"w_v must be [H, D, V] and w_p [H, V, D] for H={h}, D={d}; got {w_v.shape}, {w_p.shape}"
    )
  q = jnp.einsum("btd,hdk->bhtk", qk_src, w_q)
  k = jnp.einsum("btd,hdk->bhtk", qk_src, w_k)
  v = jnp.einsum("btd,hdv->bhtv", e, w_v)
  heads = mesa_attention(q, k, v, lam, gamma=gamma, impl=impl, chunk_size=chunk_size)
  return jnp.einsum("bhtv,hvd->btd", heads, w_p)


def with_features(e: jax.Array, features: jax.Array | None) -> jax.Array:
  """[e, features] along the last axis: e [B, T, D], features [T, P] or [B, T, P] or None."""
  if features is None:
    return e
  if features.ndim == 2:
    features = jnp.broadcast_to(features, e.shape[:2] + features.shape[-1:])
  if features.shape[:2] != e.shape[:2]:
    raise ValueError(
      f"qk_features must be [T, P] or [B, T, P] for tokens {e.shape}; got {features.shape}"
    )
  return jnp.concatenate([e, features.astype(e.dtype)], axis=-1)

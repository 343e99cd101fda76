"""Transformer-7 and the hybrid-mesa model on raw states (sheet §3.2, Figs 2, 6, 7A).

Shape notation: B sequences, T steps, N state width, D embedding width, L layers.

Both are core ``attention.Transformer`` stacks: a bias-free embedding N -> D, causal
attention blocks (the first with a sinusoidal encoding of width P concatenated to its
queries/keys only, never to the residual stream), a readout D -> N; no LayerNorm and no MLP
(the released fully observed config). Transformer-7 is 7 softmax blocks; the hybrid is a
softmax block followed by a mesa-layer, with the residual stream clipped to ±1.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from innerloop_core.attention import Mask, Transformer
from innerloop_tasks.dynamics import TaskFamily


@dataclasses.dataclass(frozen=True)
class SeqRun:
  """One sequence model trained on raw states (defaults: Transformer-7, Figs 6/7A)."""

  enabled: bool = False
  family: TaskFamily = TaskFamily.LINEAR
  attention: tuple[str, ...] = ("softmax",) * 7
  dim: int = 40
  num_heads: int = 4
  key_size: int = 20
  pe_dim: int = 40
  token_clip: float | None = None
  # Core's init is truncated-normal fan-in with variance init_scale / fan_in: 0.1 / 40 gives
  # the authors' N(0, 0.05²) for the 40-wide projections (sheet §3.2).
  init_scale: float = 0.1
  steps: int = 10000
  seeds: int = 1
  batch_size: int = 256
  learning_rate: float = 8e-4
  warmup_steps: int = 1000  # then cosine decay to `final_learning_rate` at `steps`
  final_learning_rate: float = 1e-5  # the authors' end value (sheet §3.2)
  weight_decay: float = 0.05
  grad_clip_elementwise: float = 1.0
  eval_every: int = 500
  copy_probe: bool = True  # Fig 2A: probe s_{t'}, t' = 43..50, from layer 1 at t = 50
  mesa_impl: str = "auto"


def build_sequence_model(run: SeqRun, state_dim: int, key: jax.Array) -> Transformer:
  return Transformer(
    dim=run.dim,
    num_layers=len(run.attention),
    num_heads=run.num_heads,
    key_size=run.key_size,
    attention=list(run.attention),
    tied=False,
    key=key,
    token_clip=run.token_clip,
    init_scale=run.init_scale,
    pe_dim=run.pe_dim,
    input_dim=state_dim,
    output_dim=state_dim,
    mesa_impl=run.mesa_impl,
  )


def predict_states(model: Transformer, states: np.ndarray | jax.Array) -> jax.Array:
  """ŝ_2..ŝ_{T+1} [B, T, N] from s_1..s_T (states [B, T+1, N])."""
  return model(states[:, :-1], mask=Mask.CAUSAL)


def layer_outputs(model: Transformer, states: jax.Array) -> list[jax.Array]:
  """Residual-stream states [e_0 (embedded input), e_1, ..., e_L], each [B, T, D]."""
  _, layers = model(states[:, :-1], mask=Mask.CAUSAL, return_all=True)
  return layers

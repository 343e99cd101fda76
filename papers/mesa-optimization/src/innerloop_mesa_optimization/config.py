"""Configs of the mesa-optimization reproduction: one `Run` per trained model, three profiles.

Commands (from the repo root):
  uv run dvc repro mesa-optimization                                # profile from params.yaml (cpu)
  uv run python -m innerloop_mesa_optimization all --profile tiny   # same stages without DVC
  uv run python -m innerloop_mesa_optimization train --profile cpu --set lsa1.seeds=2

Expected (cpu, 2 cores): LSA-1 within 2% of the in-workspace Prop-1/GD-1 test loss (≈ 0.89),
Mesa-1 below 0.3 × LSA-1, per-t loss at t = 50 ordered LSA-1 > LSA-2 > LSA-4, probes
decreasing with depth, softmax kernel regression above ridge LSQ at every n_s (Fig 5B).
Measured run times are in papers/mesa-optimization/README.md.
"""

from __future__ import annotations

import dataclasses

from innerloop_mesa_optimization.models import LayerKind
from innerloop_mesa_optimization.sequence_models import SeqRun
from innerloop_tasks.dynamics import TaskFamily, TokenLayout


@dataclasses.dataclass(frozen=True)
class Run:
  """One trained constructed-token model (sheet §3.2-3.3; defaults: Fig 4A/4C LSA-1)."""

  enabled: bool = True
  family: TaskFamily = TaskFamily.LINEAR
  kind: LayerKind = LayerKind.LINEAR
  num_layers: int = 1
  num_heads: int = 2
  key_size: int = 20
  input_mask: bool = True  # the 1-layer models zero token dims 0..2N−1 (sheet pitfall 6)
  clip: float = 4.0  # activation clip after every layer
  init_std: float = 2e-4  # N(0, 0.0002²) [code]
  steps: int = 5000
  seeds: int = 1
  batch_size: int = 256
  learning_rate: float = 2e-4
  weight_decay: float = 0.05
  grad_clip_elementwise: float = 1.0
  eval_every: int = 100
  probes: bool = False  # target/preconditioning probes per layer (Fig 4E/F)
  mesa_impl: str = "auto"  # innerloop_core.mesa.MesaImpl value


def lsa(depth: int, **overrides) -> Run:
  """LSA-d of Figs 4D-F: 4 heads, no input mask, lr 1e-4, wd 0.1 (sheet §3.2-3.3)."""
  spec = dict(num_layers=depth, num_heads=4, input_mask=False, learning_rate=1e-4, weight_decay=0.1)
  return Run(**{**spec, **overrides})


def mesa(**overrides) -> Run:
  """Mesa-1: one mesa-layer, 4 heads of key size 20, no input mask. lr 4e-4 is the sheet's
  Mesa-1 rate of Figs 4D-F (the 4A table row gives 2e-4 for the LSA models)."""
  spec = dict(kind=LayerKind.MESA, num_heads=4, input_mask=False, learning_rate=4e-4)
  return Run(**{**spec, **overrides})


def hybrid(**overrides) -> SeqRun:
  """The hybrid-mesa model: a softmax block with PE, then a mesa-layer; residual clip ±1."""
  spec = dict(attention=("softmax", "mesa"), token_clip=1.0, learning_rate=3e-4, steps=20000)
  return SeqRun(**{**spec, **overrides})


@dataclasses.dataclass(frozen=True)
class Fig5b:
  """LSQ vs softmax kernel regression as the state width n_s grows (T = 4 n_s)."""

  enabled: bool = True
  state_dims: tuple[int, ...] = (4, 6, 10, 20, 40, 60)
  batch_size: int = 64  # the sheet's linearisation test batch
  num_batches: int = 4
  log10_betas: tuple[float, ...] = tuple(x / 4 for x in range(-8, 13))  # β ∈ [0.01, 1000]


@dataclasses.dataclass(frozen=True)
class Config:
  length: int = 50  # T
  state_dim: int = 10  # N
  token_layout: TokenLayout = TokenLayout.CODE
  test_batches: int = 10  # test loss = mean over these fixed batches (sheet §3.3)
  test_batch_size: int = 256
  test_seed: int = 1
  checkpoint_every: int = 500
  lsq_rho: float = 0.001  # ρ of ridge LSQ and of Prop-2's A = SSᵀ + ρI (code, fully observed)
  prop2_depths: tuple[int, ...] = (2, 4, 6, 7)  # Prop-2(d): d − 1 preconditioning steps + 1 GD
  prop2_fit_steps: int = 2000  # the authors fit 20000 Adam steps
  prop2_fit_lr: float = 0.01
  prop2_fit_batch: int = 128
  probe_batch: int = 256
  probe_chebyshev_steps: int = 6  # the preconditioning probe target: 6-step Chebyshev
  probe_zscore: float = 2.0  # drop samples whose target-norm z-score is >= this
  lsa1: Run = Run()
  fixed_w: Run = Run(family=TaskFamily.FIXED_W)  # Appendix E.2
  contracting: Run = Run(enabled=False, family=TaskFamily.CONTRACTING)  # Appendix E.1
  lsa2: Run = lsa(2, steps=5000)
  lsa4: Run = lsa(4, steps=10000, probes=True)
  lsa6: Run = lsa(6, enabled=False, steps=15000, probes=True)
  mesa1: Run = mesa(steps=5000)
  fig5b: Fig5b = Fig5b()
  # Figs 2A, 6, 7A (fully observed): full profile only.
  transformer7: SeqRun = SeqRun()
  hybrid: SeqRun = hybrid()


# Trained models in the order they run; `LSA_DEPTHS` are compared with Prop-2 in Fig 4D.
RUNS = ("lsa1", "fixed_w", "contracting", "lsa2", "lsa4", "lsa6", "mesa1")
SEQ_RUNS = ("transformer7", "hybrid")
LSA_DEPTHS = (("lsa1", 1), ("lsa2", 2), ("lsa4", 4), ("lsa6", 6))

_TINY = dict(seeds=1, batch_size=64, eval_every=100)

PROFILES: dict[str, Config] = {
  # CI smoke (seconds on 2 cores): LSA-1 for 300 steps, a 2-layer LSA with probes for 50,
  # every reference solver, Fig 5B at n_s = 4. No mesa training (its scan
  # compile alone exceeds the smoke budget; core's tests cover the layer).
  "tiny": Config(
    test_batches=1,
    test_batch_size=256,
    prop2_depths=(2,),
    prop2_fit_steps=30,
    prop2_fit_batch=32,
    probe_batch=128,
    probe_chebyshev_steps=1,
    lsa1=Run(steps=300, learning_rate=1e-3, **_TINY),
    fixed_w=Run(enabled=False),
    lsa2=lsa(2, steps=50, probes=True, learning_rate=1e-3, **_TINY),
    lsa4=Run(enabled=False),
    mesa1=Run(enabled=False),
    fig5b=Fig5b(state_dims=(4,), num_batches=1, log10_betas=(-1.0, 0.0, 1.0)),
  ),
  # ≤ 20 min on 2 cores: Figs 4A/4C (LSA-1, 1300 steps), E.1, E.2, 4D/E/F (LSA-2/4 at B 128),
  # 4A mesa (Mesa-1, B 128), 5B; the α/β fit shortened.
  "cpu": Config(
    prop2_depths=(2, 4),
    prop2_fit_steps=600,
    lsa1=Run(steps=1300),
    fixed_w=Run(family=TaskFamily.FIXED_W, steps=1300),
    contracting=Run(family=TaskFamily.CONTRACTING, steps=1300),
    lsa2=lsa(2, steps=3000, batch_size=128, eval_every=250),
    lsa4=lsa(4, steps=3000, batch_size=128, eval_every=250, probes=True),
    mesa1=mesa(steps=1000, batch_size=128, eval_every=100),
  ),
  # Paper scale on one GPU, 5 seeds, resumable (core train's budget + resume).
  "full": Config(
    prop2_fit_steps=20000,
    lsa1=Run(steps=5000, seeds=5),
    fixed_w=Run(family=TaskFamily.FIXED_W, steps=5000, seeds=5),
    contracting=Run(family=TaskFamily.CONTRACTING, steps=5000, seeds=5),
    lsa2=lsa(2, steps=5000, seeds=5),
    lsa4=lsa(4, steps=10000, seeds=5, probes=True),
    lsa6=lsa(6, steps=15000, seeds=5, probes=True),
    mesa1=mesa(steps=5000, seeds=5),
    transformer7=SeqRun(enabled=True, seeds=5),
    hybrid=hybrid(enabled=True, seeds=5),
  ),
}

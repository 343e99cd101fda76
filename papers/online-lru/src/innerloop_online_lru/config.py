"""Profiles of the online-lru reproduction (tiny / cpu / full).

Commands (from the repo root):
  uv run dvc repro online-lru                                   profile from params.yaml (cpu)
  uv run python -m innerloop_online_lru all --profile tiny      CI smoke, ≈ 1 min on 2 cores
  uv run python -m innerloop_online_lru all --profile cpu       ≈ 17.5 min on 2 cores (measured)
  uv run python -m innerloop_online_lru train --profile full --budget-s 540   one GPU, in slices
LRA data (full profile, and the cpu LRA stages when present) is user-provided: put
`cifar-10-python.tar.gz`, `aclImdb_v1.tar.gz` and LRA's `listops/basic_{train,val,test}.tsv`
under `data_dir` (default papers/online-lru/data/); a missing file is reported as "data not
provided" and that experiment is skipped.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from innerloop_core.config import added_field
from innerloop_core.lru import BlockActivation, GradientRule
from innerloop_online_lru.model import Cell

ALL_RULES = (GradientRule.BPTT, GradientRule.ONLINE, GradientRule.ONE_STEP, GradientRule.SPATIAL)


class Task(enum.Enum):
  LISTOPS_GENERATED = "listops_generated"  # our generator (stand-in)
  DIGITS = "digits"  # scikit-learn digits as 64-step sequences (stand-in for sCIFAR)
  LISTOPS = "listops"  # LRA TSVs (user-provided)
  IMDB = "imdb"  # aclImdb_v1.tar.gz (user-provided)
  SCIFAR = "scifar"  # cifar-10-python.tar.gz (user-provided), colour


class OnlineImpl(enum.Enum):
  """How training computes a non-BPTT rule's gradient (the same gradient either way)."""

  STOP_GRADIENT = "stop_gradient"  # autodiff of the stop-gradient forward (fast, O(T) memory)
  STREAMING = "streaming"  # model.stream_grads: traces forward in time (memory flat in T)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  d_model: int = 128
  d_hidden: int = 64
  num_layers: int = 4
  r_min: float = 0.0
  r_max: float = 1.0
  max_phase: float = 2 * math.pi
  dropout: float = 0.1
  # Table 1's one-layer GRU: no block activation, ReLU-MLP readout (0: a Dense decoder)
  activation: BlockActivation = added_field(BlockActivation.FULL_GLU)
  readout_width: int = added_field(0)


@dataclasses.dataclass(frozen=True)
class OptConfig:
  """Two groups as in the official code: recurrent parameters (ν_log, θ_log, γ_log, B) get
  Adam at lr·lr_factor without weight decay; everything else (LayerNorm included) AdamW(lr,
  weight_decay). `b_fast_and_decay` moves B to the second group. Schedule: linear warm-up over
  `warmup_steps`, then cosine decay to 0."""

  learning_rate: float = 1e-3
  lr_factor: float = 0.5
  weight_decay: float = 0.0
  warmup_steps: int = 0
  b_fast_and_decay: bool = False


@dataclasses.dataclass(frozen=True)
class ExactnessConfig:
  """O1-O3 on the copy network: online vs BPTT (one layer), traces vs stop-gradient form."""

  enabled: bool = True
  d_model: int = 16
  d_hidden: int = 8
  depths: tuple[int, ...] = (1, 2, 4)
  batch: int = 4
  pattern_length: int = 5
  pad: int = 3


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
  """Fig 2A/B at initialisation: cosine and norm ratio of the online gradient vs BPTT's."""

  enabled: bool = True
  depths: tuple[int, ...] = (1, 2, 3, 4, 5)
  seeds: tuple[int, ...] = (201, 202, 203, 204, 205)
  d_model: int = 128
  d_hidden: int = 64
  batch: int = 50
  pattern_length: int = 20
  pad: int = 7


@dataclasses.dataclass(frozen=True)
class CopyConfig:
  """Copy-task training under each rule (Fig 2E/F, Table 1 LRU row)."""

  enabled: bool = True
  pattern_length: int = 20
  pad: int = 7
  num_bits: int = 7
  model: ModelConfig = ModelConfig()
  optim: OptConfig = OptConfig()
  rules: tuple[GradientRule, ...] = ALL_RULES
  seeds: tuple[int, ...] = (201, 202, 203)
  batch: int = 50
  steps: int = 10_000
  eval_every: int = 400
  checkpoint_every: int = 400
  train_size: int = 20_000
  eval_size: int = 1_000  # val and test each
  track_alignment: bool = True  # cosine with BPTT's gradient at every evaluation
  cell: Cell = Cell.LRU  # DENSE_LINEAR / GRU: Table 1's baselines (their "online" is SnAp-1)
  online_impl: OnlineImpl = OnlineImpl.STOP_GRADIENT  # STREAMING: LRU cell only


@dataclasses.dataclass(frozen=True)
class DepthSweepConfig:
  """Fig 2A/B as the paper runs it: `copy` trained at every depth in `depths` (each run sets
  copy.model.num_layers), alignment with BPTT's gradient read at every evaluation (every
  copy.eval_every steps) during training, and the test bit accuracy per depth."""

  enabled: bool = True
  depths: tuple[int, ...] = (1, 2, 3, 4, 5)
  # the sheet's Fig 2A/B row: 128/64, dropout 0.1, batch 50, lr 1e-3, lr_factor 0.5, wd 0,
  # 25 epochs × 400 steps, alignment every 100 batches, seeds 201-210
  copy: CopyConfig = CopyConfig(
    model=ModelConfig(d_model=128, d_hidden=64, dropout=0.1),
    optim=OptConfig(learning_rate=1e-3, lr_factor=0.5),
    rules=(GradientRule.ONLINE,),
    seeds=tuple(range(201, 211)),
    batch=50,
    steps=25 * 400,
    eval_every=100,
    checkpoint_every=400,
  )


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
  """Sequence classification with pool_st and a loss at every valid step (Table 2)."""

  enabled: bool = False
  task: Task = Task.LISTOPS_GENERATED
  model: ModelConfig = ModelConfig(d_model=64, d_hidden=32, num_layers=2, dropout=0.0)
  optim: OptConfig = OptConfig(learning_rate=3e-3, lr_factor=0.5, weight_decay=0.05)
  rules: tuple[GradientRule, ...] = ALL_RULES
  seeds: tuple[int, ...] = (0,)
  batch: int = 32
  steps: int = 1_000
  eval_every: int = 200
  checkpoint_every: int = 200
  eval_chunk: int = 250  # examples per evaluation chunk (memory)
  max_len: int = 256
  # generated ListOps
  listops_sizes: tuple[int, int, int] = (4_000, 500, 500)
  listops_max_depth: int = 4
  listops_min_length: int = 30
  listops_max_length: int = 200
  listops_seed: int = 0
  cell: Cell = Cell.LRU  # DENSE_LINEAR: Table 3's dense linear RNN
  # IMDB
  imdb_min_freq: int = 15
  imdb_val_from_train: bool = False  # the paper selects on test (no val split); True: 10% val


@dataclasses.dataclass(frozen=True)
class Config:
  exactness: ExactnessConfig = ExactnessConfig()
  alignment: AlignmentConfig = AlignmentConfig()
  depth_sweep: DepthSweepConfig = DepthSweepConfig()
  copy: CopyConfig = CopyConfig()
  copy_dense: CopyConfig = CopyConfig(enabled=False, cell=Cell.DENSE_LINEAR)
  copy_gru: CopyConfig = CopyConfig(enabled=False, cell=Cell.GRU)
  copy_gru_reference: CopyConfig = CopyConfig(enabled=False, cell=Cell.GRU_REFERENCE_SNAP)
  copy_gru_1l: CopyConfig = CopyConfig(enabled=False, cell=Cell.GRU)
  listops: ClassifyConfig = ClassifyConfig()
  digits: ClassifyConfig = ClassifyConfig(task=Task.DIGITS, max_len=64)
  lra_listops: ClassifyConfig = ClassifyConfig(task=Task.LISTOPS)
  lra_imdb: ClassifyConfig = ClassifyConfig(task=Task.IMDB)
  lra_scifar: ClassifyConfig = ClassifyConfig(task=Task.SCIFAR)
  table3_scifar_dense: ClassifyConfig = ClassifyConfig(task=Task.SCIFAR, cell=Cell.DENSE_LINEAR)
  data_dir: str = "data"  # relative to the paper directory


TINY = Config(
  exactness=ExactnessConfig(depths=(1,)),
  alignment=AlignmentConfig(enabled=False),
  depth_sweep=DepthSweepConfig(enabled=False),  # a toy sweep is unit-tested instead
  copy=CopyConfig(
    pattern_length=5,
    pad=3,
    model=ModelConfig(d_model=16, d_hidden=8, num_layers=2, dropout=0.0),
    optim=OptConfig(learning_rate=3e-3),
    rules=(GradientRule.BPTT, GradientRule.ONLINE),
    seeds=(0,),
    batch=8,
    steps=20,
    eval_every=10,
    checkpoint_every=20,
    train_size=200,
    eval_size=50,
    track_alignment=False,
  ),
  listops=ClassifyConfig(
    enabled=True,
    model=ModelConfig(d_model=16, d_hidden=8, num_layers=1, dropout=0.0),
    rules=(GradientRule.ONLINE,),
    batch=4,
    steps=4,
    eval_every=2,
    checkpoint_every=4,
    eval_chunk=10,
    max_len=128,
    listops_sizes=(10, 10, 10),
    listops_max_depth=3,
    listops_min_length=10,
    listops_max_length=100,
  ),
)

# Copy-mini (cpu): pattern 10, pad 5, T = 26; 2 layers 64/32; batch 32; 2 000 steps.
_COPY_MINI = CopyConfig(
  pattern_length=10,
  pad=5,
  model=ModelConfig(d_model=64, d_hidden=32, num_layers=2, dropout=0.0),
  optim=OptConfig(learning_rate=3e-3, lr_factor=0.5),
  rules=ALL_RULES,
  seeds=(201, 202, 203),
  batch=32,
  steps=2_000,
  eval_every=200,
  checkpoint_every=500,
  train_size=20_000,
  eval_size=1_000,
)
# Copy-mini for the dense baselines (Table 1 rows): lr_factor 1, as in the paper's rows.
_COPY_MINI_DENSE = dataclasses.replace(
  _COPY_MINI, cell=Cell.DENSE_LINEAR, optim=OptConfig(learning_rate=3e-3, lr_factor=1.0)
)
_COPY_MINI_GRU = dataclasses.replace(
  _COPY_MINI_DENSE,
  cell=Cell.GRU,
  model=ModelConfig(d_model=48, d_hidden=48, num_layers=2, dropout=0.0),
)

CPU = Config(
  alignment=AlignmentConfig(),
  # Fig 2A/B during training on copy-mini: the online rule at L = 1..5, 3 seeds, 400 steps,
  # alignment every 50 steps (8 readings after init); 348 s of training on 2 shared cores
  # (L = 1: 38 s, L = 5: 105 s; widths 32 and 64 cost about the same there: per-op overhead).
  depth_sweep=DepthSweepConfig(
    copy=dataclasses.replace(
      _COPY_MINI, rules=(GradientRule.ONLINE,), steps=400, eval_every=50, checkpoint_every=200
    )
  ),
  copy=_COPY_MINI,
  copy_dense=_COPY_MINI_DENSE,
  # Table 1's GRU row on copy-mini: N = d_model = 48 (about the LRU block's parameter count, as
  # the paper's 91 vs 128/64), lr_factor 1 as in the paper's GRU rows.
  copy_gru=_COPY_MINI_GRU,
  # SnAp-1 with the reference code's σ(a)σ(1 − a) (only the online rule differs).
  copy_gru_reference=dataclasses.replace(
    _COPY_MINI_GRU, cell=Cell.GRU_REFERENCE_SNAP, rules=(GradientRule.ONLINE,)
  ),
  # Table 1's one-layer GRU on copy-mini: width 64 and a ReLU-MLP readout 8× wider (the
  # paper: 134 and 1072), no block activation; BPTT and SnAp-1 only (the claim's gap)
  copy_gru_1l=dataclasses.replace(
    _COPY_MINI_GRU,
    model=ModelConfig(
      d_model=64,
      d_hidden=64,
      num_layers=1,
      dropout=0.0,
      activation=BlockActivation.NONE,
      readout_width=512,
    ),
    rules=(GradientRule.BPTT, GradientRule.ONLINE),
  ),
  digits=ClassifyConfig(
    enabled=True,
    task=Task.DIGITS,
    model=ModelConfig(d_model=32, d_hidden=32, num_layers=2, r_min=0.5, dropout=0.0),
    optim=OptConfig(learning_rate=3e-3, lr_factor=0.5, weight_decay=0.05),
    seeds=(0,),
    batch=32,
    steps=600,
    eval_every=100,
    checkpoint_every=300,
    max_len=64,
  ),
)

_LRA_LISTOPS = ClassifyConfig(
  enabled=True,
  task=Task.LISTOPS,
  model=ModelConfig(d_model=256, d_hidden=128, num_layers=4, dropout=0.0),
  optim=OptConfig(learning_rate=1e-3, lr_factor=0.5, weight_decay=0.05, warmup_steps=4 * 3_000),
  seeds=(0, 1, 2),
  batch=32,
  steps=40 * 3_000,
  eval_every=3_000,
  checkpoint_every=1_000,
  eval_chunk=100,
  max_len=2048,
)

_FULL_GRU = CopyConfig(
  cell=Cell.GRU,
  model=ModelConfig(d_model=91, d_hidden=91, num_layers=4, dropout=0.1),
  optim=OptConfig(learning_rate=2e-3, lr_factor=1.0),
  seeds=(201, 202, 203),
  batch=50,
  steps=10_000,
)

FULL = Config(
  exactness=ExactnessConfig(depths=(1, 2, 4)),
  alignment=AlignmentConfig(seeds=tuple(range(201, 211))),
  copy=CopyConfig(
    model=ModelConfig(d_model=128, d_hidden=64, num_layers=4, dropout=0.1),
    optim=OptConfig(learning_rate=2e-3, lr_factor=0.5),
    seeds=(201, 202, 203),
    batch=50,
    steps=10_000,
  ),
  copy_dense=CopyConfig(
    cell=Cell.DENSE_LINEAR,
    model=ModelConfig(d_model=146, d_hidden=64, num_layers=4, dropout=0.1),
    optim=OptConfig(learning_rate=2e-3, lr_factor=1.0),
    seeds=(201, 202, 203),
    batch=50,
    steps=10_000,
  ),
  copy_gru=_FULL_GRU,
  copy_gru_reference=dataclasses.replace(
    _FULL_GRU, cell=Cell.GRU_REFERENCE_SNAP, rules=(GradientRule.ONLINE,)
  ),
  # Table 1's one-layer GRU: d 134, no block activation, ReLU-MLP readout of width 1072
  copy_gru_1l=dataclasses.replace(
    _FULL_GRU,
    model=ModelConfig(
      d_model=134,
      d_hidden=134,
      num_layers=1,
      dropout=0.1,
      activation=BlockActivation.NONE,
      readout_width=1072,
    ),
  ),
  listops=ClassifyConfig(
    enabled=True,
    model=ModelConfig(d_model=128, d_hidden=64, num_layers=4, dropout=0.0),
    seeds=(0, 1, 2),
    steps=10_000,
    eval_every=1_000,
    checkpoint_every=1_000,
    listops_sizes=(96_000, 2_000, 2_000),
    listops_max_depth=10,
    listops_min_length=500,
    listops_max_length=2000,
    max_len=2048,
    eval_chunk=100,
  ),
  digits=ClassifyConfig(
    enabled=True,
    task=Task.DIGITS,
    model=ModelConfig(d_model=64, d_hidden=64, num_layers=4, r_min=0.5, dropout=0.1),
    optim=OptConfig(learning_rate=3e-3, lr_factor=0.5, weight_decay=0.05),
    seeds=(0, 1, 2),
    steps=5_000,
    eval_every=500,
    checkpoint_every=1_000,
    max_len=64,
  ),
  lra_listops=_LRA_LISTOPS,
  lra_imdb=ClassifyConfig(
    enabled=True,
    task=Task.IMDB,
    model=ModelConfig(d_model=64, d_hidden=64, num_layers=4, dropout=0.1),
    optim=OptConfig(learning_rate=1e-3, lr_factor=0.5, weight_decay=0.05, b_fast_and_decay=True),
    seeds=(0, 1, 2),
    batch=32,
    steps=35 * 781,
    eval_every=781,
    checkpoint_every=500,
    eval_chunk=50,
    max_len=4096,
  ),
  lra_scifar=ClassifyConfig(
    enabled=True,
    task=Task.SCIFAR,
    model=ModelConfig(d_model=256, d_hidden=128, num_layers=4, r_min=0.9, r_max=0.999),
    optim=OptConfig(
      learning_rate=4e-3,
      lr_factor=0.5,
      weight_decay=0.1,
      warmup_steps=18 * 495,
      b_fast_and_decay=True,
    ),
    seeds=(0, 1, 2),
    batch=100,
    steps=180 * 495,
    eval_every=495,
    checkpoint_every=495,
    eval_chunk=100,
    max_len=1024,
  ),
  # Table 3: dense linear RNN, 4 layers 294/128, pool_st, colour sCIFAR, optimiser "standard"
  table3_scifar_dense=ClassifyConfig(
    enabled=True,
    task=Task.SCIFAR,
    cell=Cell.DENSE_LINEAR,
    model=ModelConfig(d_model=294, d_hidden=128, num_layers=4),
    optim=OptConfig(learning_rate=1e-3, lr_factor=1.0, weight_decay=0.1, warmup_steps=18 * 495),
    seeds=(0, 1, 2),
    batch=100,
    steps=180 * 495,
    eval_every=495,
    checkpoint_every=495,
    eval_chunk=100,
    max_len=1024,
  ),
)

PROFILES = {"tiny": TINY, "cpu": CPU, "full": FULL}

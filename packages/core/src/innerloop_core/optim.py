"""Optimizers from a typed config: Adam(W)/SGD, schedules and both kinds of clipping.

The papers clip gradients by global norm (the usual choice) *and* element-wise (some
notebooks), so both are options and may be combined; clipping runs before the optimizer.
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import optax

from innerloop_core.config import ConfigError, added_field


class OptimizerName(enum.Enum):
  ADAM = "adam"
  ADAMW = "adamw"
  SGD = "sgd"


class Schedule(enum.Enum):
  CONSTANT = "constant"
  COSINE = "cosine"  # cosine decay to final_lr_fraction·lr (default 0) over the run
  WARMUP_COSINE = "warmup_cosine"  # linear warm-up, then cosine decay to final_lr_fraction·lr


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  name: OptimizerName = OptimizerName.ADAM
  learning_rate: float = 1e-3
  b1: float = 0.9
  b2: float = 0.999
  weight_decay: float = 0.0
  schedule: Schedule = Schedule.CONSTANT
  warmup_steps: int = 0
  clip_global_norm: float | None = None
  clip_elementwise: float | None = None
  # COSINE and WARMUP_COSINE: the learning rate ends at this fraction of its peak. Added after runs existed, so it
  # stays out of checkpoint fingerprints at its default.
  final_lr_fraction: float = added_field(0.0)
  # Parameters (by attribute name anywhere on their path, e.g. "nu") that weight decay leaves
  # alone: a decay parameter pulled toward 0 would drag every λ toward σ(0) = 0.5.
  decay_exclude: tuple[str, ...] = added_field(())


def learning_rate_schedule(cfg: OptimConfig, num_steps: int) -> optax.Schedule:
  if cfg.schedule is Schedule.CONSTANT:
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule is Schedule.COSINE:
    return optax.cosine_decay_schedule(
      cfg.learning_rate, max(num_steps, 1), alpha=cfg.final_lr_fraction
    )
  if cfg.schedule is Schedule.WARMUP_COSINE:
    return optax.warmup_cosine_decay_schedule(
      0.0,
      cfg.learning_rate,
      cfg.warmup_steps,
      max(num_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )
  raise ConfigError(
    f"optim.schedule: {cfg.schedule!r}; allowed: {', '.join(s.value for s in Schedule)}"
  )


def _decay_mask(cfg: OptimConfig):
  """None (decay everything) or a function params -> bool tree: False on excluded names."""
  if not cfg.decay_exclude:
    return None
  excluded = set(cfg.decay_exclude)

  def mask(params):
    def keep(path, _):
      return not any(getattr(k, "key", getattr(k, "name", None)) in excluded for k in path)

    return jax.tree_util.tree_map_with_path(keep, params)

  return mask


def make_optimizer(cfg: OptimConfig, num_steps: int) -> optax.GradientTransformation:
  """Builds the optax chain: [element-wise clip] -> [global-norm clip] -> optimizer."""
  if cfg.learning_rate <= 0:
    raise ConfigError(f"optim.learning_rate must be > 0, got {cfg.learning_rate}")
  for name in ("clip_global_norm", "clip_elementwise"):
    value = getattr(cfg, name)
    if value is not None and value <= 0:
      raise ConfigError(f"optim.{name} must be > 0 or none, got {value}")
  if cfg.decay_exclude and (cfg.name is OptimizerName.ADAM or not cfg.weight_decay):
    raise ConfigError(
      f"optim.decay_exclude={cfg.decay_exclude} needs weight decay: name adamw or sgd with "
      f"weight_decay > 0 (got name {cfg.name.value}, weight_decay {cfg.weight_decay})"
    )
  lr = learning_rate_schedule(cfg, num_steps)
  chain = []
  if cfg.clip_elementwise is not None:
    chain.append(optax.clip(cfg.clip_elementwise))
  if cfg.clip_global_norm is not None:
    chain.append(optax.clip_by_global_norm(cfg.clip_global_norm))
  if cfg.name is OptimizerName.ADAM:
    chain.append(optax.adam(lr, b1=cfg.b1, b2=cfg.b2))
  elif cfg.name is OptimizerName.ADAMW:
    chain.append(
      optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=_decay_mask(cfg))
    )
  elif cfg.name is OptimizerName.SGD:
    if cfg.weight_decay:  # coupled L2 decay, as torch.optim.SGD(weight_decay=...)
      chain.append(optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask(cfg)))
    chain.append(optax.sgd(lr))
  else:
    raise ConfigError(
      f"optim.name: {cfg.name!r}; allowed: {', '.join(n.value for n in OptimizerName)}"
    )
  return optax.chain(*chain)

"""The icl-gd experiments: train, compare with in-repo GD/GD++ references, write results.

Every experiment writes `results/<profile>/<name>.json`, read by the figures and by the
published-results check. All baselines (line-searched GD-K, fitted GD++-K) are computed
here on the same validation tasks as the trained models; none is typed in.

Shape notation: B tasks, N context pairs, Dx/Dy input/output width, D = Dx + Dy,
S seeds (leading axis of stacked parameters).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from innerloop_core import config as core_config
from innerloop_core import runlog
from innerloop_core.attention import Mask, Transformer, linear_attention_from_products
from innerloop_core.optim import make_optimizer
from innerloop_core.train import Deadline, LoopConfig, TrainResult, train
from innerloop_icl_gd import gd
from innerloop_icl_gd.config import Config, Experiment, optimizer_for
from innerloop_tasks import regression as tasks


@dataclasses.dataclass(frozen=True)
class Paths:
  results: pathlib.Path  # small JSON results (tracked in git)
  runs: pathlib.Path  # checkpoints and metric logs (DVC-cached, persistent)


# ---------------------------------------------------------------------------------------
# Models and predictions
# ---------------------------------------------------------------------------------------


def build_transformer(exp: Experiment, key: jax.Array) -> Transformer:
  m = exp.model
  kinds = [k.strip() for k in m.attention.split(",")]
  attention = kinds[0] if len(kinds) == 1 else kinds
  return Transformer(
    dim=exp.task.input_dim + exp.task.output_dim,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    key_size=m.key_size,
    attention=attention,
    tied=m.tied,
    mlp_hidden=m.mlp_hidden,
    layer_norm=m.layer_norm,
    token_clip=m.token_clip,
    init_scale=m.init_scale / m.num_layers,
    key=key,
  )


def transformer_predict(model: Transformer, batch: tasks.RegressionBatch, **call_kw) -> jax.Array:
  """ŷ [B, Dy] of a Transformer on constructed tokens (query excluded from keys/values)."""
  tokens = tasks.constructed_tokens(batch)
  out = model(tokens, mask=Mask.CONTEXT_ONLY, num_context=batch.x_context.shape[1], **call_kw)
  return gd.readout(out, batch.y_query.shape[-1])


def task_sampler(exp: Experiment, batch_size: int, **overrides):
  t = exp.task
  return functools.partial(
    tasks.linear_regression_tasks,
    batch_size=batch_size,
    num_context=t.num_context,
    input_dim=t.input_dim,
    output_dim=t.output_dim,
    convention=t.convention,
    **overrides,
  )


# Fixed training sets (Fig 16) are drawn from their own key, shared by all seeds.
POOL_SEED = 1016


def training_sampler(exp: Experiment):
  """key -> a training batch: fresh tasks every step, or draws from a fixed pool (Fig 16)."""
  if exp.pool_size is None:
    return task_sampler(exp, exp.batch_size)
  if exp.pool_size < 1:
    raise ValueError(f"pool_size must be a positive int or none, got {exp.pool_size}")
  pool = task_sampler(exp, exp.pool_size)(jax.random.key(POOL_SEED))
  return lambda key: tasks.sample_from_pool(key, pool, exp.batch_size)


def validation_batch(cfg: Config, exp: Experiment, **overrides) -> tasks.RegressionBatch:
  return task_sampler(exp, cfg.validation_tasks, **overrides)(jax.random.key(cfg.validation_seed))


# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------


def fit_references(
  cfg: Config, exp: Experiment, val: tasks.RegressionBatch, seed: int = 0
) -> dict[str, Any]:
  """GD-K with a line-searched shared η and GD++-K with Adam-fitted (η, γ) (sheet §4)."""
  k = exp.gd_steps
  eta, gd_loss = gd.line_search_eta(val, num_steps=k)
  n = exp.task.num_context
  shared = exp.model.tied
  etas, gammas, _ = gd.fit_gd_plus_plus(
    jax.random.fold_in(jax.random.key(seed), 12345),
    task_sampler(exp, exp.gdpp_fit_batch),
    k,
    shared=shared,
    steps=exp.gdpp_fit_steps,
    learning_rate=exp.gdpp_fit_lr,
    init_eta=float(eta),
    init_gamma=float(eta) / n**2,
    clip_norm=None if shared else 1.0,
  )
  gdpp_loss = gd.query_loss(gd.gd_predict(val, etas, gammas), val.y_query)
  return {
    "gd": {"eta": float(eta), "loss": float(gd_loss), "steps": k},
    "gdpp": {
      "etas": np.asarray(etas).tolist(),
      "gammas": np.asarray(gammas).tolist(),
      "loss": float(gdpp_loss),
      "shared": shared,
      "steps": k,
    },
  }


def reference_predictors(refs: dict[str, Any]):
  k = refs["gd"]["steps"]
  gd_etas = jnp.full((k,), refs["gd"]["eta"])
  gdpp_etas = jnp.asarray(refs["gdpp"]["etas"])
  gdpp_gammas = jnp.asarray(refs["gdpp"]["gammas"])
  return (lambda b: gd.gd_predict(b, gd_etas), lambda b: gd.gd_predict(b, gdpp_etas, gdpp_gammas))


# ---------------------------------------------------------------------------------------
# Training one experiment
# ---------------------------------------------------------------------------------------


def train_experiment(
  name: str, cfg: Config, exp: Experiment, paths: Paths, deadline: Deadline
) -> dict[str, Any]:
  """Trains `exp.seeds` models (vmapped), evaluates them against GD/GD++ and analyses them."""
  val = validation_batch(cfg, exp)
  refs = fit_references(cfg, exp, val)
  predict_gd, predict_gdpp = reference_predictors(refs)
  sample = training_sampler(exp)

  def loss(model, batch):
    return gd.query_loss(transformer_predict(model, batch), batch.y_query)

  def evaluate(model):
    predict = lambda b: transformer_predict(model, b)  # noqa: E731
    to_gd = gd.alignment(predict, predict_gd, val)
    to_gdpp = gd.alignment(predict, predict_gdpp, val)
    return {
      "val_loss": gd.query_loss(predict(val), val.y_query),
      **{f"{k}_gd": v for k, v in to_gd.items()},
      **{f"{k}_gdpp": v for k, v in to_gdpp.items()},
    }

  num_layers = exp.model.num_layers
  optim_cfg = optimizer_for(
    cfg.optim_convention, num_layers, exp.learning_rate, exp.clip_global_norm
  )
  result = train(
    name=name,
    init=lambda key: build_transformer(exp, key),
    sample_batch=sample,
    loss=loss,
    optimizer=make_optimizer(optim_cfg, exp.steps),
    loop=LoopConfig(exp.steps, exp.eval_every, cfg.checkpoint_every),
    seeds=range(exp.seeds),
    run_dir=paths.runs / name,
    # Post-training analyses (analyses, ood) do not change the run: not in the fingerprint.
    fingerprint=core_config.fingerprint(
      (
        name,
        dataclasses.replace(exp, analyses=False, ood=False, enabled=True),
        cfg.optim_convention,
        cfg.validation_tasks,
        cfg.validation_seed,
      )
    ),
    evaluate=evaluate,
    deadline=deadline,
  )

  out: dict[str, Any] = {
    "references": refs,
    "seeds": list(result.seeds),
    "wall_time_s": result.wall_time_s,
    "final": {k: v for k, v in result.history[-1].items() if k != "step"},
    "curves": curves(result.history),
  }
  final = out["final"]
  final["loss_ratio_gd"] = [v / refs["gd"]["loss"] for v in final["val_loss"]]
  final["loss_ratio_gdpp"] = [v / refs["gdpp"]["loss"] for v in final["val_loss"]]
  final["steps_to_gd"] = steps_to_reach(
    out["curves"]["val_loss"], 1.05 * refs["gd"]["loss"], exp.steps
  )
  if exp.model.attention == "linear" and exp.model.tied:
    out["weights"] = trained_eta_gamma(result, exp)
  if exp.analyses:
    out.update(analyses(cfg, exp, result, refs, val))
  if exp.ood:
    out["ood"] = ood_sweeps(cfg, exp, result, refs)
  runlog.write_json(paths.results / f"{name}.json", out)
  return out


def curves(history: list[dict[str, Any]]) -> dict[str, Any]:
  """Metric curves over training: {name: [S][steps]} plus the shared step axis."""
  rows = [r for r in history]
  names = sorted({k for r in rows for k in r if k != "step"})
  out: dict[str, Any] = {"step": [r["step"] for r in rows]}
  for n in names:
    present = [r for r in rows if n in r]
    out[n] = {
      "step": [r["step"] for r in present],
      "value": np.asarray([r[n] for r in present]).T.tolist(),
    }
  return out


def steps_to_reach(curve: dict[str, Any], threshold: float, never: int) -> list[float]:
  """Per seed, the first logged step whose loss is <= threshold (`never` + 1 if none)."""
  out = []
  for values in curve["value"]:
    hits = [step for step, v in zip(curve["step"], values) if v <= threshold]
    out.append(float(hits[0] if hits else never + 1))
  return out


def trained_eta_gamma(result: TrainResult, exp: Experiment) -> dict[str, Any]:
  """η and γ read off each seed's trained (tied, linear) layer after β-rescaling, and the
  rescaled products M_KQ, M_PV of seed 0 (summed over heads) for the Fig 9 heat maps."""
  etas, gammas = [], []
  for s in range(len(result.seeds)):
    attention = result.model(s).blocks[0].attention
    m_kq, m_pv = gd.rescale_products(*gd.interaction_products(attention), exp.task.input_dim)
    eta, gamma = gd.extract_eta_gamma(
      m_pv, exp.task.input_dim, exp.task.output_dim, exp.task.num_context
    )
    etas.append(float(eta))
    gammas.append(float(gamma))
    if s == 0:
      products = {
        "m_kq": np.asarray(m_kq.sum(0)).tolist(),
        "m_pv": np.asarray(m_pv.sum(0)).tolist(),
      }
  return {"eta": etas, "gamma": gammas, "products_seed0": products}


def ood_sweeps(
  cfg: Config, exp: Experiment, result: TrainResult, refs: dict[str, Any]
) -> dict[str, Any]:
  """Loss of each seed and of GD-K / GD++-K when inputs or targets are scaled by α (Fig 6)."""
  predict_gd, predict_gdpp = reference_predictors(refs)
  loss_of = lambda predict, b: float(gd.query_loss(predict(b), b.y_query))  # noqa: E731
  inputs = [validation_batch(cfg, exp, input_scale=a) for a in cfg.ood.input_scales]
  targets = [validation_batch(cfg, exp, target_scale=a) for a in cfg.ood.target_scales]
  out: dict[str, Any] = {
    "input_scales": list(cfg.ood.input_scales),
    "target_scales": list(cfg.ood.target_scales),
  }
  for who, predict in (("gd", predict_gd), ("gdpp", predict_gdpp)):
    out[f"{who}_input"] = [loss_of(predict, b) for b in inputs]
    out[f"{who}_target"] = [loss_of(predict, b) for b in targets]
  models = [result.model(s) for s in range(len(result.seeds))]
  predict_tf = jax.jit(lambda model, b: transformer_predict(model, b))
  out["trained_input"] = [[loss_of(lambda b: predict_tf(m, b), b) for b in inputs] for m in models]
  out["trained_target"] = [
    [loss_of(lambda b: predict_tf(m, b), b) for b in targets] for m in models
  ]
  # |log L_TF - log L_GD| per seed and scale: the sheet's "tracks GD" measure (row 13).
  for axis in ("input", "target"):
    out[f"log_ratio_{axis}_max"] = [
      float(np.max(np.abs(np.log(np.asarray(tr)) - np.log(np.asarray(out[f"gd_{axis}"])))))
      for tr in out[f"trained_{axis}"]
    ]
  return out


# ---------------------------------------------------------------------------------------
# Analyses of a trained 1-layer model (Figs 1-2, 6, 10)
# ---------------------------------------------------------------------------------------


def analyses(
  cfg: Config,
  exp: Experiment,
  result: TrainResult,
  refs: dict[str, Any],
  val: tasks.RegressionBatch,
) -> dict[str, Any]:
  t = exp.task
  eta = refs["gd"]["eta"]
  construction = gd.prop1_params(t.input_dim, t.output_dim, eta, t.num_context)
  prop1_products = gd.interaction_products(construction)
  loss_of = lambda predict, b: float(gd.query_loss(predict(b), b.y_query))  # noqa: E731

  interp, damp = [], []
  for s in range(len(result.seeds)):
    model = result.model(s)
    trained = gd.rescale_products(*gd.interaction_products(model.blocks[0].attention), t.input_dim)
    mixed = gd.interpolate_products(trained, prop1_products)

    def predict_mixed(b, mixed=mixed):
      tokens = tasks.constructed_tokens(b)
      delta = linear_attention_from_products(
        tokens, *mixed, mask=Mask.CONTEXT_ONLY, num_context=t.num_context
      )
      return gd.readout(tokens + delta, t.output_dim)

    interp.append(loss_of(predict_mixed, val))
    damp.append(rollout_losses(model, val, cfg.dampening.lambdas, cfg.dampening.rollout_steps))
  gd_model = prop1_model(t, eta)
  gd_damp = rollout_losses(gd_model, val, cfg.dampening.lambdas, cfg.dampening.rollout_steps)
  return {
    "interpolated": {"val_loss": interp},
    "dampening": {
      "lambdas": list(cfg.dampening.lambdas),
      "trained": damp,
      "gd": gd_damp,
      "summary": dampening_summary(cfg.dampening.lambdas, damp, gd_damp),
    },
  }


def dampening_summary(lambdas, trained, gd_rollout) -> dict[str, Any]:
  """Per λ: final loss, whether the loss decreased at every application, final/initial."""
  out: dict[str, Any] = {}
  for i, lam in enumerate(lambdas):
    tag = f"lam{lam:g}".replace(".", "p")
    for who, curves_ in (("trained", [seed[i] for seed in trained]), ("gd", [gd_rollout[i]])):
      arr = np.asarray(curves_)
      out[f"{who}_{tag}_final"] = arr[:, -1].tolist()
      with np.errstate(invalid="ignore"):  # diff of inf, inf is NaN: not a decrease
        out[f"{who}_{tag}_monotone"] = [float(np.all(np.diff(c) < 0)) for c in arr]
      with np.errstate(invalid="ignore"):  # inf / inf when both ends diverged
        growth = np.where(np.isinf(arr[:, -1]), np.inf, arr[:, -1] / arr[:, 1])
      out[f"{who}_{tag}_growth"] = growth.tolist()
  return out


def prop1_model(task, eta: float) -> Transformer:
  """A 1-layer tied Transformer holding the Prop-1 weights: K applications = K GD steps."""
  dim = task.input_dim + task.output_dim
  model = Transformer(
    dim=dim,
    num_layers=1,
    num_heads=1,
    key_size=dim,
    attention="linear",
    tied=True,
    key=jax.random.key(0),
  )
  weights = gd.prop1_params(task.input_dim, task.output_dim, eta, task.num_context)
  attention = model.blocks[0].attention
  for name, value in weights.items():
    getattr(attention, name)[...] = value
  return model


def rollout_losses(
  model: Transformer, val: tasks.RegressionBatch, lambdas: tuple[float, ...], steps: int
) -> list[list[float]]:
  """Loss after each of `steps` applications e <- e + λΔe of a tied layer, per λ [Λ][K+1]."""
  tokens = tasks.constructed_tokens(val)
  dy = val.y_query.shape[-1]
  out = []
  for lam in lambdas:
    _, states = model(
      tokens,
      mask=Mask.CONTEXT_ONLY,
      num_context=val.x_context.shape[1],
      num_layers=steps,
      residual_scale=lam,
      return_all=True,
    )
    losses = [float(gd.query_loss(gd.readout(e, dy), val.y_query)) for e in states]
    # A diverged roll-out overflows to inf and then to NaN (inf - inf): record it as inf.
    out.append([v if math.isfinite(v) else math.inf for v in losses])
  return out


# ---------------------------------------------------------------------------------------
# Fig 13: eigenvalues of XXᵀ and the trained γ per context size
# ---------------------------------------------------------------------------------------


def gamma_vs_n(cfg: Config, paths: Paths, deadline: Deadline) -> dict[str, Any]:
  g = cfg.gamma_vs_n
  rows = []
  for n in g.num_contexts:
    lo, hi = tasks.xxt_eigenvalue_extremes(
      jax.random.key(cfg.validation_seed), g.eigen_tasks, n, convention=cfg.fig3a.task.convention
    )
    exp = dataclasses.replace(
      cfg.fig3a,
      steps=g.steps,
      seeds=g.seeds,
      batch_size=g.batch_size,
      task=dataclasses.replace(cfg.fig3a.task, num_context=n),
      model=dataclasses.replace(cfg.fig3a.model, key_size=cfg.fig3a.task.input_dim + 1),
    )
    # N = 10 with fig3a's settings is fig3a itself: reuse its checkpoint, do not retrain.
    name = "fig3a" if exp == cfg.fig3a else f"fig13_n{n}"
    res = train_experiment(name, cfg, exp, paths, deadline)
    rows.append(
      {
        "num_context": n,
        "eig_min": float(lo),
        "eig_max": float(hi),
        "gamma": res["weights"]["gamma"],
        "eta": res["weights"]["eta"],
        "gdpp_gamma": res["references"]["gdpp"]["gammas"][0],
        "val_loss": res["final"]["val_loss"],
      }
    )
  out = {"rows": rows, "by_n": {f"n{r['num_context']}": r for r in rows}}
  runlog.write_json(paths.results / "fig13.json", out)
  return out

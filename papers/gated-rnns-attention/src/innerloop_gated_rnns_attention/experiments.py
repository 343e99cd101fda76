"""The gated-rnns-attention experiments: train, analyse, write results/<profile>/*.json.

  construction     C1: the exact constructions on random weights (no training)
  teacher_student  E1/E2: gated RNN students of an LSA teacher, n sweep, λ, pruning, probes
  icl              E3-E7: gated RNNs vs trained LSA vs 1-step GD on in-context regression,
                   n sweep, probes, sigmoid gates, LSTM and GRU

Every reference (GD-1's η, the teacher's memories) is computed here from the same data as
the trained models; no number is typed in. Shape notation: S seeds, B sequences or tasks,
T time steps, N neurons.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from innerloop_core import config as core_config
from innerloop_core import runlog
from innerloop_core.attention import (
  AttentionKind,
  Mask,
  SelfAttention,
  causal_linear_attention_recurrent,
)
from innerloop_core.optim import OptimConfig, make_optimizer
from innerloop_core.recurrent import Decay, Gate, GatedCellRNN, GatedLinearRNN, gated_rnn
from innerloop_core.train import Deadline, LoopConfig, TrainResult, train
from innerloop_gated_rnns_attention import analysis
from innerloop_gated_rnns_attention.config import Config, Icl, TeacherStudent
from innerloop_gated_rnns_attention.construction import (
  Form,
  gd_to_gated_rnn,
  lsa_size,
  lsa_to_gated_rnn,
)
from innerloop_gated_rnns_attention.models import (
  LRUGLUNet,
  ReachableGatedRNN,
  decay_bound,
  project_decay,
)
from innerloop_icl_gd import gd
from innerloop_tasks import regression
from innerloop_tasks.teacher_student import (
  lsa_teacher_outputs,
  random_lsa_teacher,
  teacher_student_batch,
)


@dataclasses.dataclass(frozen=True)
class Paths:
  results: pathlib.Path  # small JSON results (tracked in git)
  runs: pathlib.Path  # checkpoints and metric logs (DVC-cached, persistent)


def _log(message: str) -> None:
  print(f"[gated-rnns-attention] {message}", file=sys.stderr)


def _curves(history: list[dict[str, Any]], name: str) -> dict[str, Any]:
  rows = [r for r in history if name in r]
  return {
    "step": [r["step"] for r in rows],
    "value": np.asarray([r[name] for r in rows]).T.tolist(),
  }


def _train(
  name: str,
  cfg: Config,
  sub: Any,
  paths: Paths,
  deadline: Deadline,
  *,
  init: Callable,
  sample: Callable,
  loss: Callable,
  evaluate: Callable,
  optim: OptimConfig,
  extra: Any = None,
  project: tuple[float, float] | None = None,
) -> TrainResult:
  """One vmapped-seeds run of `sub` (a TeacherStudent or Icl config) through core's loop.

  project: (low, high) bounds the decay parameter ν is projected into after every step.
  """
  optimizer = make_optimizer(optim, sub.steps)
  if project is not None:
    optimizer = optax.chain(optimizer, project_decay(*project))
  return train(
    name=name,
    init=init,
    sample_batch=sample,
    loss=loss,
    optimizer=optimizer,
    loop=LoopConfig(sub.steps, sub.eval_every, cfg.checkpoint_every),
    seeds=range(sub.seeds),
    run_dir=paths.runs / name,
    fingerprint=core_config.fingerprint((name, sub, optim, extra)),
    evaluate=evaluate,
    deadline=deadline,
  )


# ---------------------------------------------------------------------------------------
# C1: the constructions
# ---------------------------------------------------------------------------------------


def construction(cfg: Config, paths: Paths) -> dict[str, Any]:
  """Max |RNN − LSA| of both constructions, |recurrent − quadratic LSA| and |RNN − GD-1|."""
  c = cfg.construction
  key_t, key_x, key_icl = jax.random.split(jax.random.key(c.seed), 3)
  teacher = random_lsa_teacher(key_t, c.dim, c.num_heads, c.key_size, c.value_size)
  x = jax.random.normal(key_x, (c.sequences, c.length, c.dim))
  want = lsa_teacher_outputs(teacher, x)
  scale = float(jnp.max(jnp.abs(want)))
  out: dict[str, Any] = {"output_max_abs": scale}
  for form in Form:
    built = lsa_to_gated_rnn(*teacher, form=form)
    n, m = lsa_size(c.dim, c.num_heads, c.key_size, c.value_size, form)
    err = float(jnp.max(jnp.abs(gated_rnn(x, built.weights) - want)))
    # Relative to the largest output: float32 rounding of sums over T steps grows with |y|.
    out[form.value] = {
      "neurons": n,
      "out_gates": m,
      "max_abs_error": err,
      "max_rel_error": err / scale,
    }
  recurrent = causal_linear_attention_recurrent(x, *teacher)
  out["recurrent_lsa_max_rel_error"] = float(jnp.max(jnp.abs(recurrent - want))) / scale
  batch = regression.linear_regression_tasks(key_icl, c.sequences, 10, c.dim)
  eta = 1.3
  rnn = gated_rnn(regression.constructed_tokens(batch), gd_to_gated_rnn(eta, 10, c.dim, 1).weights)
  out["gd_rnn_max_abs_error"] = float(
    jnp.max(jnp.abs(rnn[:, -1] - gd.gd_predict(batch, jnp.array([eta]))))
  )
  runlog.write_json(paths.results / "construction.json", out)
  _log(
    f"construction: max error / max |y| generic {out['generic']['max_rel_error']:.1e}, "
    f"compressed {out['compressed']['max_rel_error']:.1e}"
  )
  return out


# ---------------------------------------------------------------------------------------
# E1/E2: teacher-student
# ---------------------------------------------------------------------------------------


def _student(ts: TeacherStudent, n: int, key: jax.Array) -> GatedLinearRNN:
  args = (ts.dim, n, ts.out_gates, ts.dim)
  if ts.decay_margin:
    return ReachableGatedRNN(*args, key=key, gate=ts.gate, margin=ts.decay_margin)
  return GatedLinearRNN(*args, key=key, gate=ts.gate, decay=ts.decay)


def _student_projection(ts: TeacherStudent) -> tuple[float, float] | None:
  """Bounds of ν for the students' projected steps (None: ν unbounded, λ = σ(ν))."""
  if ts.decay_margin:
    bound = decay_bound(ts.decay_margin)
    return (-bound, bound)
  return (0.0, 1.0) if ts.decay is Decay.CLIPPED else None


def _analyse_student(model: GatedLinearRNN, ts: TeacherStudent, teacher, val) -> dict[str, Any]:
  w = model.weights()
  h = model.states(val.x)
  nmse = float(analysis.normalised_mse(model(val.x), val.y))
  lam = np.asarray(w.lam)
  influence = np.asarray(analysis.output_influence(w, h, ts.gate))

  def pruned_nmse(high, low):
    pruned = analysis.prune_intermediate(w, high, low)
    return float(analysis.normalised_mse(gated_rnn(val.x, pruned, gate=ts.gate), val.y))

  nmse_pruned = pruned_nmse(analysis.LAM_HIGH, analysis.LAM_LOW)
  loose = (analysis.LAM_HIGH_LOOSE, analysis.LAM_LOW_LOOSE)
  groups = analysis.lambda_groups(lam)
  split = analysis.lambda_groups(lam, analysis.LAM_SPLIT, analysis.LAM_SPLIT)
  flat_h = np.asarray(h.reshape(-1, h.shape[-1]))
  mem_r2 = analysis.probe_r2(
    flat_h[:, split["memory"]], analysis.lsa_memory_features(teacher, val.x)
  )
  qry_r2 = analysis.probe_r2(
    flat_h[:, split["memoryless"]], analysis.lsa_query_features(teacher, val.x)
  )
  return {
    "val_nmse": nmse,
    "lam": lam.tolist(),
    "influence": influence.tolist(),
    "bimodal_fraction": analysis.bimodal_fraction(lam, influence),
    "bimodal_fraction_loose": analysis.bimodal_fraction(lam, influence, *loose),
    "group_sizes": {k: int(v.size) for k, v in groups.items()},
    "pruned_nmse": nmse_pruned,
    "pruning_ratio": nmse_pruned / nmse,
    "pruning_ratio_loose": pruned_nmse(*loose) / nmse,
    "probe_memory_r2_min": float(mem_r2.min()),
    "probe_memory_r2_mean": float(mem_r2.mean()),
    "probe_query_r2_min": float(qry_r2.min()),
    "probe_query_r2_mean": float(qry_r2.mean()),
  }


def _geomean(values) -> float:
  return float(np.exp(np.mean(np.log(np.asarray(values, float)))))


def teacher_student_summary(out: dict[str, Any]) -> dict[str, Any]:
  """The quantities of claims C2 (per size class) and the training sanity check."""
  n_star = out["n_compressed"]
  runs = {int(k[1:]): v for k, v in out["runs"].items()}
  at = [v for n, v in runs.items() if n == n_star]
  above = [v for n, v in runs.items() if n > n_star]
  below = [v for n, v in runs.items() if n < n_star]
  summary: dict[str, Any] = {
    "nmse_at_nstar": at[0]["val_nmse"] if at else None,
    "nmse_above_nstar": [x for v in above for x in v["val_nmse"]] or None,
    # C3/C4 read at n = n* as well: there the student has no neuron to spare.
    "bimodal_fraction_at_nstar": [s["bimodal_fraction"] for s in at[0]["seeds"]] if at else None,
    "pruning_ratio_at_nstar": [s["pruning_ratio"] for s in at[0]["seeds"]] if at else None,
    # Final over initial validation loss, per seed and size: < 1 means training worked.
    "loss_decrease": [
      v["curve"]["value"][s][-1] / v["curve"]["value"][s][0]
      for v in runs.values()
      for s in range(len(v["curve"]["value"]))
    ],
  }
  if below and (at or above):
    smallest = runs[min(runs)]["val_nmse"]
    enough = [x for v in at + above for x in v["val_nmse"]]
    summary["gap_below_nstar"] = _geomean(smallest) / _geomean(enough)
  else:
    summary["gap_below_nstar"] = None
  return summary


def teacher_student(cfg: Config, paths: Paths, deadline: Deadline) -> dict[str, Any]:
  ts = cfg.teacher_student
  if ts.analysis_size not in ts.sizes:
    raise core_config.ConfigError(
      f"teacher_student.analysis_size={ts.analysis_size} must be one of sizes={ts.sizes}"
    )
  teacher = random_lsa_teacher(
    jax.random.key(ts.teacher_seed), ts.dim, ts.num_heads, ts.key_size, ts.value_size
  )
  val = teacher_student_batch(
    jax.random.key(ts.validation_seed), teacher, ts.validation_sequences, ts.length
  )
  # One fixed normaliser (the teacher's output variance on validation data) for training and
  # evaluation, so every reported loss is on the same scale (sheet §9).
  y_var = float(jnp.var(val.y))
  sample = functools.partial(
    teacher_student_batch, teacher=teacher, batch_size=ts.batch_size, length=ts.length
  )
  out: dict[str, Any] = {
    "teacher_output_var": y_var,
    "n_compressed": lsa_size(ts.dim, ts.num_heads, ts.key_size, ts.value_size, Form.COMPRESSED)[0],
    "n_generic": lsa_size(ts.dim, ts.num_heads, ts.key_size, ts.value_size, Form.GENERIC)[0],
    "sizes": list(ts.sizes),
    "analysis_size": ts.analysis_size,
    "runs": {},
  }
  for n in ts.sizes:
    name = f"ts_n{n}"
    result = _train(
      name,
      cfg,
      ts,
      paths,
      deadline,
      init=functools.partial(_student, ts, n),
      sample=lambda key: sample(key),
      loss=lambda model, b: jnp.mean((model(b.x) - b.y) ** 2) / y_var,
      evaluate=lambda model: {"val_nmse": analysis.normalised_mse(model(val.x), val.y)},
      optim=ts.optim,
      extra=n,
      project=_student_projection(ts),
    )
    seeds = [_analyse_student(result.model(s), ts, teacher, val) for s in range(len(result.seeds))]
    out["runs"][f"n{n}"] = {
      "seeds": seeds,
      "val_nmse": [s["val_nmse"] for s in seeds],
      "curve": _curves(result.history, "val_nmse"),
      "wall_time_s": result.wall_time_s,
    }
    losses = ", ".join(format(s["val_nmse"], ".1e") for s in seeds)
    _log(f"teacher-student n={n}: normalised MSE per seed {losses}")
  analysed = out["runs"][f"n{ts.analysis_size}"]["seeds"]
  out["analysis"] = {
    k: [s[k] for s in analysed]
    for k in (
      "bimodal_fraction",
      "bimodal_fraction_loose",
      "pruning_ratio",
      "pruning_ratio_loose",
      "probe_memory_r2_min",
      "probe_query_r2_min",
    )
  }
  out["summary"] = teacher_student_summary(out)
  runlog.write_json(paths.results / "teacher_student.json", out)
  return out


# ---------------------------------------------------------------------------------------
# E3-E7: in-context regression
# ---------------------------------------------------------------------------------------


def _tasks(icl: Icl, batch_size: int, key: jax.Array) -> regression.RegressionBatch:
  return regression.linear_regression_tasks(
    key, batch_size, icl.num_context, icl.input_dim, icl.output_dim, convention=icl.convention
  )


def _lsa(icl: Icl, key: jax.Array) -> SelfAttention:
  d = icl.input_dim + icl.output_dim
  return SelfAttention(d, 1, d, kind=AttentionKind.LINEAR, key=key, init_scale=icl.lsa_init_scale)


def _lsa_predict(model: SelfAttention, batch) -> jax.Array:
  """ŷ = the query token's y-slot of the causal LSA's output (its input y-slot is 0)."""
  out = model(regression.constructed_tokens(batch), mask=Mask.CAUSAL)
  return out[:, -1, batch.x_query.shape[-1] :]


def _rnn_predict(model, batch) -> jax.Array:
  """ŷ = the network's output at the query token."""
  return model(regression.constructed_tokens(batch))[:, -1]


def _activity(model, tokens) -> np.ndarray:
  """Every recurrent activity of a model, flattened: [B·T, width]."""
  if isinstance(model, GatedLinearRNN):
    h = model.states(tokens)
  else:
    h = jnp.concatenate(list(model.states(tokens).values()), axis=-1)
  return np.asarray(h.reshape(-1, h.shape[-1]))


def _icl_models(icl: Icl) -> dict[str, tuple[Callable, Callable, OptimConfig]]:
  """name -> (init(key), predict(model, batch), optimiser) for every E3-E7 model."""
  d = icl.input_dim + icl.output_dim
  models = {"lsa": (functools.partial(_lsa, icl), _lsa_predict, icl.optim)}
  for n in icl.rnn_sizes:
    init = lambda key, n=n: GatedLinearRNN(d, n, icl.out_gates, icl.output_dim, key=key)  # noqa: E731
    models[f"rnn_n{n}"] = (init, _rnn_predict, icl.rnn_optim)
  if icl.sigmoid_gates:
    init = lambda key: GatedLinearRNN(  # noqa: E731
      d, icl.main_size, icl.out_gates, icl.output_dim, key=key, gate=Gate.SIGMOID
    )
    models[f"rnn_sigmoid_n{icl.main_size}"] = (init, _rnn_predict, icl.rnn_optim)
  if icl.lru_layers:
    init = lambda key: LRUGLUNet(  # noqa: E731
      d, icl.lru_width, icl.lru_hidden, icl.output_dim, icl.lru_layers, key=key
    )
    models["lru_glu"] = (init, _rnn_predict, icl.rnn_optim)
  for kind in icl.cells:
    init = lambda key, kind=kind: GatedCellRNN(kind, d, icl.cell_hidden, icl.output_dim, key=key)  # noqa: E731
    models[kind] = (init, _rnn_predict, icl.rnn_optim)
  return models


def _analyse_icl(model, predict, icl: Icl, val, probe, predict_gd, gd_pred) -> dict[str, Any]:
  y_hat = predict(model, val)
  align = gd.alignment(lambda b: predict(model, b), predict_gd, probe)
  out = {
    "val_loss": float(gd.query_loss(y_hat, val.y_query)),
    "pred_rel_gd": float(jnp.linalg.norm(y_hat - gd_pred) / jnp.linalg.norm(gd_pred)),
    "sens_cos_gd": float(align["sens_cos"]),
  }
  if isinstance(model, SelfAttention):
    return out
  tokens = regression.constructed_tokens(probe)
  act = _activity(model, tokens)
  mem = analysis.icl_memory_features(tokens, icl.input_dim)
  x_t = analysis.icl_input_features(tokens, icl.input_dim)
  out["probe_memory_r2_all"] = float(analysis.probe_r2(act, mem).mean())
  if isinstance(model, GatedLinearRNN):
    lam = np.asarray(model.lam())
    groups = analysis.lambda_groups(lam, analysis.LAM_SPLIT, analysis.LAM_SPLIT)
    out["lam"] = lam.tolist()
    out["group_sizes"] = {k: int(v.size) for k, v in groups.items()}
    out["probe_memory_r2_group"] = float(analysis.probe_r2(act[:, groups["memory"]], mem).mean())
    # x_t is read out (as x_q) only at the query token, the one position the loss trains: at
    # context positions the memory-less neurons' activity never reaches a trained output, so
    # the claim probes the query token; every position is kept for reference.
    low = act[:, groups["memoryless"]].reshape(tokens.shape[0], tokens.shape[1], -1)
    x_tokens = x_t.reshape(tokens.shape[0], tokens.shape[1], -1)
    out["probe_input_r2_group"] = float(analysis.probe_r2(low[:, -1], x_tokens[:, -1]).mean())
    out["probe_input_r2_group_all_positions"] = float(
      analysis.probe_r2(act[:, groups["memoryless"]], x_t).mean()
    )
  return out


def icl(cfg: Config, paths: Paths, deadline: Deadline) -> dict[str, Any]:
  c = cfg.icl
  if c.main_size not in c.rnn_sizes:
    raise core_config.ConfigError(
      f"icl.main_size={c.main_size} must be one of rnn_sizes={c.rnn_sizes}"
    )
  val = _tasks(c, c.validation_tasks, jax.random.key(c.validation_seed))
  probe = _tasks(c, c.probe_tasks, jax.random.key(c.validation_seed + 1))
  eta, gd_loss = gd.line_search_eta(val, num_steps=1)
  predict_gd = lambda b: gd.gd_predict(b, jnp.array([eta]))  # noqa: E731
  gd_pred = predict_gd(val)
  out: dict[str, Any] = {
    "gd": {"eta": float(eta), "loss": float(gd_loss)},
    "n_star": c.input_dim * c.output_dim + c.input_dim,
    "rnn_sizes": list(c.rnn_sizes),
    "main_size": c.main_size,
    "models": {},
  }
  for name, (init, predict, optim) in _icl_models(c).items():
    result = _train(
      f"icl_{name}",
      cfg,
      c,
      paths,
      deadline,
      init=init,
      sample=functools.partial(_tasks, c, c.batch_size),
      loss=lambda model, b, predict=predict: gd.query_loss(predict(model, b), b.y_query),
      evaluate=lambda model, predict=predict: {
        "val_loss": gd.query_loss(predict(model, val), val.y_query)
      },
      optim=optim,
      extra=name,
    )
    seeds = [
      _analyse_icl(result.model(s), predict, c, val, probe, predict_gd, gd_pred)
      for s in range(len(result.seeds))
    ]
    out["models"][name] = {
      "seeds": seeds,
      **{k: [s[k] for s in seeds] for k in seeds[0] if k not in ("lam", "group_sizes")},
      "curve": _curves(result.history, "val_loss"),
      "wall_time_s": result.wall_time_s,
    }
    losses = ", ".join(format(s["val_loss"], ".4f") for s in seeds)
    _log(f"icl {name}: query loss per seed {losses} (GD-1 {gd_loss:.4f})")
  lsa_loss = float(np.mean(out["models"]["lsa"]["val_loss"]))
  for model in out["models"].values():
    model["loss_ratio_lsa"] = [v / lsa_loss for v in model["val_loss"]]
    curve = model["curve"]["value"]
    model["loss_decrease"] = [row[-1] / row[0] for row in curve]
  # Profile-independent names for the models the claims read (sizes differ per profile).
  models = out["models"]
  out["roles"] = {
    "main": models.get(f"rnn_n{c.main_size}"),
    "at_nstar": models.get(f"rnn_n{out['n_star']}"),
    "smallest": models.get(f"rnn_n{min(c.rnn_sizes)}"),
    "sigmoid": models.get(f"rnn_sigmoid_n{c.main_size}"),
  }
  main = out["roles"]["main"]
  if main is not None and "gru" in out["models"]:
    # C8: how much less of Σ_t y_t x_t a linear probe finds in the GRU than in the gated RNN.
    out["probe_gap_gru"] = float(
      np.mean(main["probe_memory_r2_all"]) - np.mean(out["models"]["gru"]["probe_memory_r2_all"])
    )
  runlog.write_json(paths.results / "icl.json", out)
  return out

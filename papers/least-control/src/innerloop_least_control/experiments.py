"""The least-control experiments: a Table-1 analogue, the alignment sweep, the identities.

Each writes `results/<profile>/<name>.json` for the figures and the published-results check.
Accuracies are in percent, from the free equilibrium after the last epoch (as the paper
reports), one value per seed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from innerloop_core import config as core_config
from innerloop_core import runlog
from innerloop_core.optim import OptimConfig, Schedule, make_optimizer
from innerloop_core.train import Deadline, LoopConfig, train
from innerloop_least_control import identities, meta
from innerloop_least_control import methods as M
from innerloop_least_control.config import (
  Alignment,
  Config,
  FewShotData,
  FewShotMeta,
  MetaLearning,
  Table,
)
from innerloop_least_control.model import (
  Arch,
  BufferInit,
  EquilibriumNet,
  ModelConfig,
  accuracy,
  decoder,
  free_equilibrium,
  free_equilibrium_from,
  init_params,
  mean_cross_entropy,
  params_of,
  unrolled_forward,
)
from innerloop_tasks import glyphs, images


@dataclasses.dataclass(frozen=True)
class Paths:
  results: pathlib.Path
  runs: pathlib.Path


CONV_RNN_METHODS = (M.Method.RBP, M.Method.BPTT, M.Method.LCP_DI)
# Archs whose maps normalise with the batch's statistics (BatchNorm in train mode, as the
# reference code at test time too): evaluated in consecutive test batches of the training size.
BATCH_STATISTICS = (Arch.CONV_RNN,)


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  arch: Arch
  method: M.Method
  weak: bool
  free_start: bool = False  # "@free": controlled dynamics start at the free equilibrium (ours)

  @classmethod
  def parse(cls, text: str) -> "Row":
    base, _, suffix = text.partition("@")
    if suffix not in ("", "weak", "free"):
      raise core_config.ConfigError(
        f"table.rows: {text!r}: the suffix must be one of '@weak', '@free'"
      )
    # The longest arch name that prefixes the row ("conv-ff-bp" is conv-ff, not ff).
    arch_text = max(
      (a.value for a in Arch if base.startswith(a.value + "-")), key=len, default=base
    )
    arch = core_config.parse_enum(arch_text, Arch, f"table.rows ({text!r}) arch")
    method_text = base[len(arch_text) + 1 :]
    method = core_config.parse_enum(method_text, M.Method, f"table.rows ({text!r}) method")
    if method is M.Method.BP and arch.recurrent:
      raise core_config.ConfigError(f"table.rows: {text!r}: bp needs a feedforward arch (use rbp)")
    if (method is M.Method.EP) != (arch is Arch.RNN_SYM) and method is not M.Method.RBP:
      raise core_config.ConfigError(
        f"table.rows: {text!r}: ep needs rnn-sym (the one arch with an energy), which trains "
        f"only by ep or rbp"
      )
    if arch is Arch.CONV_RNN and method not in CONV_RNN_METHODS:
      allowed = ", ".join(m.value for m in CONV_RNN_METHODS)
      raise core_config.ConfigError(
        f"table.rows: {text!r}: conv-rnn supports the methods {allowed} (as the reference code)"
      )
    if suffix and not method.is_lcp:
      raise core_config.ConfigError(f"table.rows: {text!r}: '@{suffix}' applies to lcp methods")
    return cls(text, arch, method, suffix == "weak", suffix == "free")


def load_dataset(table: Table, root: pathlib.Path | None = None) -> images.Dataset:
  """The table's dataset; a relative data_dir is taken from the paper directory `root`."""
  data_dir = pathlib.Path(table.data_dir) if table.data_dir else None
  if data_dir is not None and not data_dir.is_absolute() and root is not None:
    data_dir = root / data_dir
  ds = images.load(table.dataset, data_dir)
  if table.train_subset:
    ds = dataclasses.replace(
      ds, x_train=ds.x_train[: table.train_subset], y_train=ds.y_train[: table.train_subset]
    )
  return ds


def row_control(table: Table, row: Row) -> M.ControlConfig:
  if row.weak:
    return table.weak_control
  if row.free_start:
    return dataclasses.replace(table.control, start=M.ControlStart.FREE)
  if row.method is M.Method.LCP_EBD:
    return table.ff_ebd if row.arch is Arch.FF else table.rnn_ebd
  return table.control


def _optimizer(table: Table, row: Row, num_steps: int) -> optax.GradientTransformation:
  main = make_optimizer(
    OptimConfig(
      name=table.optimizer,
      learning_rate=dict(table.row_learning_rates).get(row.name, table.learning_rate),
      weight_decay=table.weight_decay,
      schedule=Schedule.COSINE,
      final_lr_fraction=0.1,
      clip_global_norm=table.clip_rnn if row.arch.recurrent else None,
    ),
    num_steps,
  )
  if not row.method.is_lf:
    return main
  # q is a buffer with its own learning rule, not a trained weight: its pseudo-gradient is
  # −ΔQ (methods.training_loss), applied as it is, outside Adam, the schedule and the clipping.

  def labels(params):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: "buffer" if any(getattr(k, "key", None) == "q" for k in path) else "main",
      params,
    )

  return optax.multi_transform({"main": main, "buffer": optax.scale(-1.0)}, labels)


# Methods whose rule changed after checkpoints were written: the revision enters their rows'
# fingerprints, so their stale checkpoints are refused while every other row resumes.
RULE_REVISION = {M.Method.LCP_LF: "reference-code noisy Q (issue 6)"}


def row_fingerprint(table: Table, row: Row, num_train: int) -> str:
  """The row's own settings: adding or removing other rows keeps its checkpoints valid."""
  # Config objects rather than dicts, so fields added at their defaults stay out of the hash.
  settings = {f.name: getattr(table, f.name) for f in dataclasses.fields(table) if f.name != "rows"}
  if not table.row_learning_rates:  # added after runs existed: out of the hash when unset
    del settings["row_learning_rates"]
  key: dict[str, Any] = {"table": settings, "row": row.name, "n": num_train}
  if row.method in RULE_REVISION:
    key["rule"] = RULE_REVISION[row.method]
  return core_config.fingerprint(key)


def free_logits_in_batches(
  p, x: jax.Array, model_cfg: ModelConfig, table: Table
) -> tuple[jax.Array, jax.Array]:
  """Logits (N, C) at the free equilibrium of x (N, D), solved and read out in consecutive
  batches of table.batch_size (the last one shorter), as the reference's unshuffled test
  loader feeds a model that normalises with batch statistics; and the most solver iterations
  any batch took."""

  def one(xb):
    sol = free_equilibrium(p, xb, model_cfg, table.eval_solver)
    return decoder(p, sol.value), sol.iterations.astype(jnp.float32)

  n, b = x.shape[0], table.batch_size
  full = n - n % b
  if full == 0:
    return one(x)
  logits, iters = jax.lax.map(one, x[:full].reshape(n // b, b, x.shape[1]))
  logits, iters = logits.reshape(full, -1), jnp.max(iters)
  if full < n:
    rest_logits, rest_iters = one(x[full:])
    logits = jnp.concatenate([logits, rest_logits])
    iters = jnp.maximum(iters, rest_iters)
  return logits, iters


def train_row(
  table: Table, row: Row, ds: images.Dataset, paths: Paths, deadline: Deadline
) -> dict[str, Any]:
  """Trains one row for table.seeds seeds (vmapped); returns its results entry."""
  model_cfg = ModelConfig(
    arch=row.arch,
    input_dim=ds.x_train.shape[1],
    hidden=table.hidden,
    num_classes=ds.num_classes,
    kp_feedback=row.method is M.Method.LCP_KP,
    linear_feedback=row.method.is_lf,
    buffer_init=BufferInit.NORMAL if row.method is M.Method.LCP_LF else BufferInit.ZERO,
  )
  ctrl = row_control(table, row)
  steps_per_epoch = math.ceil(len(ds.y_train) / table.batch_size)
  num_steps = table.epochs * steps_per_epoch
  eval_every = max(1, num_steps // max(table.evals, 1))
  data = (
    jnp.asarray(ds.x_train),
    jnp.asarray(ds.y_train),
    jnp.asarray(ds.x_test),
    jnp.asarray(ds.y_test),
  )

  def sample_batch(key, data):
    k_idx, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_idx, (table.batch_size,), 0, data[0].shape[0])
    return data[0][idx], data[1][idx], k_noise

  def loss(model, batch):
    x, y, key = batch
    return M.training_loss(params_of(model), x, y, key, model_cfg, row.method, ctrl, table.grad)

  def evaluate(model, data):
    p = params_of(model)
    x, y = data[2], data[3]
    if row.method is M.Method.BP:
      v = unrolled_forward(p, x, model_cfg)
      iters = jnp.asarray(0.0)  # no solver: the explicit forward pass
      logits = decoder(p, v)
    elif row.arch in BATCH_STATISTICS:
      logits, iters = free_logits_in_batches(p, x, model_cfg, table)
    else:
      sol = free_equilibrium(p, x, model_cfg, table.eval_solver)
      v, iters = sol.value, sol.iterations.astype(jnp.float32)
      logits = decoder(p, v)
    out = {
      "test_acc": 100.0 * accuracy(logits, y),
      "test_loss": mean_cross_entropy(logits, y),
      "free_iterations": iters,
    }
    xb, yb = x[: table.batch_size], y[: table.batch_size]
    if row.method.is_lcp:
      # Least-control objective on the first test batch: H = ½‖ψ*‖² (mean over examples).
      s, e, u = M.lcp_state(p, xb, yb, model_cfg, ctrl, table.grad, row.method)
      out["control_energy"] = 0.5 * (jnp.sum(e**2) + jnp.sum(u**2)) / xb.shape[0]
    if row.arch is Arch.RNN:
      # Multi-stability probe (labels used for diagnosis only): relax the free dynamics from
      # the official (strong, from rest) DI controlled equilibrium of the first test batch and
      # compare with the free solve from v = 0 that evaluation uses. A different end point
      # means the control steered the example onto another free equilibrium.
      if not (row.method is M.Method.LCP_DI and ctrl == table.control):  # else: s from above
        s, _, _ = M.lcp_state(p, xb, yb, model_cfg, table.control, table.grad, M.Method.LCP_DI)
      v_ctrl = free_equilibrium_from(p, xb, s.v, model_cfg, table.eval_solver).value
      v_zero = v[: table.batch_size]
      gap = jnp.linalg.norm(v_ctrl - v_zero, axis=1) / (1e-5 + jnp.linalg.norm(v_zero, axis=1))
      out["branch_mismatch"] = 100.0 * jnp.mean(gap > 1e-2)
      out["acc_from_controlled"] = 100.0 * accuracy(decoder(p, v_ctrl), yb)
    return out

  fingerprint = row_fingerprint(table, row, len(ds.y_train))
  res = train(
    name=f"least-control {row.name}",
    init=lambda key: EquilibriumNet(model_cfg, key),
    sample_batch=sample_batch,
    loss=loss,
    optimizer=_optimizer(table, row, num_steps),
    loop=LoopConfig(num_steps, eval_every=eval_every, checkpoint_every=min(eval_every, 1000)),
    seeds=tuple(range(table.seeds)),
    run_dir=paths.runs / row.name.replace("@", "_"),
    fingerprint=fingerprint,
    evaluate=evaluate,
    deadline=deadline,
    data=data,
  )
  hist = res.history
  entry = {
    "arch": row.arch.value,
    "method": row.method.value,
    "weak_control": row.weak,
    "free_start": row.free_start,
    "control": core_config.to_dict(ctrl) if row.method.is_lcp else None,
    "final_test_acc": res.final("test_acc"),
    "final_test_loss": res.final("test_loss"),
    "final_free_iterations": res.final("free_iterations"),
    "mean_test_acc": float(np.mean(res.final("test_acc"))),
    "curve": {
      "epoch": [h["step"] / steps_per_epoch for h in hist],
      "test_acc": [h["test_acc"] for h in hist],
      "test_loss": [h["test_loss"] for h in hist],
    },
    "wall_time_s": round(res.wall_time_s, 1),
    "num_steps": num_steps,
  }
  if row.arch is Arch.RNN:
    entry["branch_mismatch"] = res.final("branch_mismatch")
    entry["acc_from_controlled"] = res.final("acc_from_controlled")
  if row.method.is_lcp:
    entry["control_energy"] = {
      "initial": hist[0]["control_energy"],
      "final": hist[-1]["control_energy"],
      "initial_mean": float(np.mean(hist[0]["control_energy"])),
      "final_mean": float(np.mean(hist[-1]["control_energy"])),
    }
  if (
    res.seeds
    and row.method is M.Method.LCP_DI
    and row.arch is Arch.RNN
    and row.name == "rnn-lcp-di"
  ):
    entry["_trained_params_seed0"] = res.model(0)
  return entry


BASELINE = {
  Arch.FF: "ff-bp",
  Arch.RNN: "rnn-rbp",
  Arch.CONV_FF: "conv-ff-bp",
  Arch.RNN_SYM: "rnn-sym-rbp",
  Arch.CONV_RNN: "conv-rnn-rbp",
}


def table1(
  cfg: Config, paths: Paths, deadline: Deadline, root: pathlib.Path | None = None
) -> dict[str, Any]:
  return run_table(cfg.table, "table1", paths, deadline, root)


def run_table(
  table: Table, name: str, paths: Paths, deadline: Deadline, root: pathlib.Path | None = None
) -> dict[str, Any]:
  """Trains every row of `table` and writes results/<profile>/<name>.json."""
  rows = [Row.parse(r) for r in table.rows]
  ds = load_dataset(table, root)
  out: dict[str, Any] = {
    "dataset": ds.name,
    "num_train": len(ds.y_train),
    "num_test": len(ds.y_test),
    "hidden": table.hidden,
    "epochs": table.epochs,
    "seeds": list(range(table.seeds)),
    "rows": {},
    "gaps": {},
  }
  trained = None
  for row in rows:
    t0 = time.perf_counter()
    entry = train_row(table, row, ds, paths, deadline)
    trained = entry.pop("_trained_params_seed0", trained)
    out["rows"][row.name] = entry
    print(
      f"[least-control] {row.name}: test acc {np.round(entry['final_test_acc'], 2).tolist()} "
      f"({time.perf_counter() - t0:.0f} s)",
      file=sys.stderr,
    )
  # Accuracy gaps to the gradient baseline of the same architecture (mean over seeds).
  for row_name, entry in out["rows"].items():
    base = BASELINE[Arch(entry["arch"])]
    if base in out["rows"] and row_name != base:
      out["gaps"][row_name] = entry["mean_test_acc"] - out["rows"][base]["mean_test_acc"]
  runlog.write_json(paths.results / f"{name}.json", out)
  return {"trained_rnn_lcp_di": trained, "dataset": ds}


def meta_method(row: str, prefix: str, field: str) -> M.Method:
  """ "<prefix>rbp" / "<prefix>lcp-di" -> the method (a clear error for anything else)."""
  method = M.parse_method(row[len(prefix) :]) if row.startswith(prefix) else None
  if method not in (M.Method.RBP, M.Method.LCP_DI):
    raise core_config.ConfigError(f"{field}: {row!r}; allowed: '{prefix}rbp', '{prefix}lcp-di'")
  return method


def train_meta_rows(
  cfg: MetaLearning | FewShotMeta,
  problem: meta.InnerProblem,
  methods: dict[str, M.Method],
  *,
  name: str,
  run_dir: pathlib.Path,
  sample_batch,
  evaluate,
  data,
  deadline: Deadline,
) -> dict[str, Any]:
  """Meta-learns θ with each row's meta-gradient (Adam, seeds vmapped, resumable); returns
  the training results by row. The fingerprint is the settings without `rows`."""
  settings = {k: v for k, v in core_config.to_dict(cfg).items() if k != "rows"}
  eval_every = max(1, cfg.steps // max(cfg.evals, 1))
  results = {}
  for row, method in methods.items():

    def loss(model, batch, method=method):
      return meta.meta_training_loss(model, *batch, problem, method, cfg.control, cfg.solver)

    results[row] = train(
      name=f"least-control {name} {row}",
      init=lambda key: meta.MetaInit(problem, key),
      sample_batch=sample_batch,
      loss=loss,
      optimizer=make_optimizer(OptimConfig(learning_rate=cfg.learning_rate), cfg.steps),
      loop=LoopConfig(cfg.steps, eval_every=eval_every, checkpoint_every=eval_every),
      seeds=tuple(range(cfg.seeds)),
      run_dir=run_dir / row,
      fingerprint=core_config.fingerprint({name: settings, "row": row}),
      evaluate=evaluate,
      deadline=deadline,
      data=data,
    )
  return results


def meta_row_summary(res, method: M.Method, metric: str, at_theta: str | None) -> dict[str, Any]:
  """A row's entry in the results file: the final and initial metric per seed, the curve."""
  hist = res.history
  keys = (metric,) + ((at_theta,) if at_theta else ())
  out = {
    "method": method.value,
    f"final_{metric}": res.final(metric),
    f"mean_{metric}": float(np.mean(res.final(metric))),
    f"initial_mean_{metric}": float(np.mean(hist[0][metric])),
    "curve": {"step": [h["step"] for h in hist], **{k: [h[k] for h in hist] for k in keys}},
    "wall_time_s": round(res.wall_time_s, 1),
  }
  if at_theta:
    out[f"mean_{at_theta}"] = float(np.mean(res.final(at_theta)))
  return out


def meta_learning(cfg: MetaLearning, paths: Paths, deadline: Deadline) -> dict[str, Any]:
  """Meta-learns the INR initialisation θ with each row's meta-gradient (seeds vmapped) and
  writes results/<profile>/meta.json: query PSNR on held-out text images after the inner solve,
  and at θ itself (no adaptation)."""
  spec = cfg.spec
  methods = {row: meta_method(row, "inr-", "meta.rows") for row in cfg.rows}
  train_s, train_q = meta.split_pixels(
    glyphs.text_images(cfg.image_seeds[0], cfg.train_images, spec.side)
  )
  test_s, test_q = meta.split_pixels(
    glyphs.text_images(cfg.image_seeds[1], cfg.test_images, spec.side)
  )
  data = tuple(jnp.asarray(a) for a in (train_s, train_q, test_s, test_q))

  def sample_batch(key, data):
    idx = jax.random.randint(key, (cfg.batch_size,), 0, data[0].shape[0])
    return data[0][idx], data[1][idx]

  def evaluate(model, data):
    theta = model.theta[...]
    support, query = data[2], data[3]
    phi = meta.adapt(spec, theta, support, cfg.solver)
    return {
      "test_psnr": spec.score(meta.readout(spec, query, phi.value), query),
      "test_psnr_at_theta": spec.score(
        meta.readout(spec, query, meta.at_theta(theta, len(query))), query
      ),
      "inner_iterations": phi.iterations.astype(jnp.float32),
    }

  results = train_meta_rows(
    cfg,
    spec,
    methods,
    name="meta",
    run_dir=paths.runs / "meta",
    sample_batch=sample_batch,
    evaluate=evaluate,
    data=data,
    deadline=deadline,
  )
  out: dict[str, Any] = {
    "images": {"train": len(train_s), "test": len(test_s), "side": spec.side},
    "num_weights": spec.num_weights,
    "rows": {},
  }
  for row, res in results.items():
    out["rows"][row] = meta_row_summary(res, methods[row], "test_psnr", "test_psnr_at_theta")
    print(
      f"[least-control] meta {row}: query PSNR {np.round(res.final('test_psnr'), 2).tolist()} "
      f"dB (at init {out['rows'][row]['initial_mean_test_psnr']:.2f})",
      file=sys.stderr,
    )
  runlog.write_json(paths.results / "meta.json", out)
  return out


def nearest_neighbour_accuracy(support: tuple, query: tuple) -> jax.Array:
  """Pixel-space 1-nearest-neighbour accuracy of each episode's query drawings against its
  support (the reference point for how hard the glyphs are): mean over episodes."""
  (sx, sl), (qx, ql) = support, query
  d = jnp.sum((qx[:, :, None] - sx[:, None]) ** 2, axis=-1)  # (T, Q, ways)
  pred = jnp.take_along_axis(sl, jnp.argmin(d, axis=-1), axis=1)
  return jnp.mean(pred == ql)


def few_shot_drawings(cfg: FewShotMeta, root: pathlib.Path | None = None):
  """(meta-train (C, I, D), meta-test (C', I, D)) jnp drawings, D = side² pixels."""
  side = cfg.spec.side
  if cfg.dataset is FewShotData.OMNIGLOT:
    if not cfg.data_dir:
      raise images.DataNotProvided("data not provided: fewshot.dataset 'omniglot' needs a data_dir")
    data_dir = pathlib.Path(cfg.data_dir)
    if not data_dir.is_absolute() and root is not None:
      data_dir = root / data_dir
    sets = images.load_omniglot(data_dir, side)
    if sets[0].shape[1] < cfg.drawings:
      raise core_config.ConfigError(
        f"fewshot.drawings: {cfg.drawings} > the {sets[0].shape[1]} drawings per character found"
      )
    sets = tuple(a[:, : cfg.drawings] for a in sets)
  else:
    sets = tuple(
      glyphs.render_glyphs(glyphs.stroke_alphabet(a, c), cfg.drawings, side, r)
      for a, c, r in zip(
        cfg.alphabet_seeds, (cfg.train_classes, cfg.test_classes), cfg.render_seeds
      )
    )
  return tuple(jnp.asarray(a.reshape(a.shape[0], a.shape[1], side * side)) for a in sets)


def few_shot(
  cfg: FewShotMeta, paths: Paths, deadline: Deadline, root: pathlib.Path | None = None
) -> dict[str, Any]:
  """Meta-learns a glyph classifier's initialisation for 20-way 1-shot episodes with each
  row's meta-gradient (seeds vmapped) and writes results/<profile>/fewshot.json: query accuracy
  (%) on fixed meta-test episodes over held-out classes after the inner solve."""
  spec = cfg.spec
  methods = {row: meta_method(row, "fewshot-", "fewshot.rows") for row in cfg.rows}
  train_x, test_x = few_shot_drawings(cfg, root)
  for name, x in (("meta-train", train_x), ("meta-test", test_x)):
    if x.shape[0] < spec.ways:
      raise core_config.ConfigError(
        f"fewshot.spec.ways: {spec.ways} > the {x.shape[0]} {name} classes"
      )
  episode = functools.partial(glyphs.sample_episodes, ways=spec.ways, queries=cfg.queries)
  test = episode(jax.random.key(cfg.episode_seed), test_x, cfg.test_episodes)

  def sample_batch(key, data):
    return episode(key, data[0], cfg.batch_size)

  def evaluate(model, data):
    support, query = data[1]
    phi = meta.adapt(spec, model.theta[...], support, cfg.solver)
    return {
      "test_acc": 100.0 * spec.score(meta.readout(spec, query, phi.value), query),
      "inner_iterations": phi.iterations.astype(jnp.float32),
    }

  results = train_meta_rows(
    cfg,
    spec,
    methods,
    name="fewshot",
    run_dir=paths.runs / "fewshot",
    sample_batch=sample_batch,
    evaluate=evaluate,
    data=(train_x, test),
    deadline=deadline,
  )
  out: dict[str, Any] = {
    "dataset": cfg.dataset.value,
    "side": spec.side,
    "classes": {"train": int(train_x.shape[0]), "test": int(test_x.shape[0])},
    "ways": spec.ways,
    "test_episodes": cfg.test_episodes,
    "num_weights": spec.num_weights,
    "pixel_nearest_neighbour_acc": 100.0 * float(nearest_neighbour_accuracy(*test)),
    "rows": {},
  }
  for row, res in results.items():
    out["rows"][row] = meta_row_summary(res, methods[row], "test_acc", None)
    print(
      f"[least-control] fewshot {row}: query accuracy "
      f"{np.round(res.final('test_acc'), 2).tolist()} % "
      f"(at init {out['rows'][row]['initial_mean_test_acc']:.2f})",
      file=sys.stderr,
    )
  runlog.write_json(paths.results / "fewshot.json", out)
  return out


def alignment(cfg: Config, paths: Paths, ds: images.Dataset, trained_model=None) -> dict[str, Any]:
  """cos(LCP-DI update, −∇θ L by RBP) vs k_i/α, at initialisation and (if given) for the
  trained rnn LCP-DI model; strengths ≥ 1 use α = 1/s (k_i = 1), weaker ones α = 1, k_i = s
  (the Euler-stable form of weak control, sheet §10)."""
  al: Alignment = cfg.alignment
  table = cfg.table
  x = jnp.asarray(ds.x_test[: al.batch_size])
  y = jnp.asarray(ds.y_test[: al.batch_size])
  model_cfg = ModelConfig(arch=Arch.RNN, input_dim=x.shape[1], hidden=table.hidden)
  grad_cfg = M.GradConfig(forward=al.solver, backward=al.solver)
  models = {"init": init_params(model_cfg, jax.random.key(0))}
  if trained_model is not None:
    models["trained"] = {n: v for n, v in params_of(trained_model).items()}
  out: dict[str, Any] = {"strengths": list(al.strengths), "curves": {}}
  # One compiled program per strength, shared by the models (same shapes): compiling dominates.
  neg_rbp = jax.jit(
    lambda q: jax.tree.map(jnp.negative, M.rbp_gradient(q, x, y, model_cfg, grad_cfg))
  )

  def point(ctrl: M.ControlConfig):
    @jax.jit
    def run(q, neg):
      s, sol = M.controlled_equilibrium(q, x, y, model_cfg, ctrl, M.Method.LCP_DI)
      u = ctrl.k_i * s.u_i - ctrl.k_p * M.output_error(s.y, y)
      upd = M.local_update(q, x, s, s.e, u, model_cfg.arch)
      return M.cosine(upd, neg), sol.iterations, sol.residual

    return run

  runs = []
  for s in al.strengths:
    alpha, k_i = (1.0 / s, 1.0) if s >= 1 else (1.0, s)
    runs.append(point(M.ControlConfig(alpha=alpha, k_i=k_i, solver=al.solver)))
  for label, p in models.items():
    neg = neg_rbp(p)
    cos, iters, resid = [], [], []
    for run in runs:
      c, it, r = run(p, neg)
      cos.append(float(c))
      iters.append(int(it))
      resid.append(float(r))
    out["curves"][label] = {"cosine": cos, "iterations": iters, "residual": resid}
  out["weak_limit_cosine"] = {k: v["cosine"][0] for k, v in out["curves"].items()}
  runlog.write_json(paths.results / "alignment.json", out)
  return out


def write_identities(paths: Paths) -> dict[str, Any]:
  t0 = time.perf_counter()
  out = identities.all_identities()
  out["wall_time_s"] = round(time.perf_counter() - t0, 1)
  runlog.write_json(paths.results / "identities.json", out)
  return out

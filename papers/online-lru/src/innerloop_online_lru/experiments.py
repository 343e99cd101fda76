"""The experiments: exactness (O1-O3), alignment vs depth (Fig 2A/B), copy task under each
learning rule (Fig 2E/F, Table 1 LRU row), sequence classification (Table 2 and stand-ins).

Every training run goes through `innerloop_core.train.train` (seeds vmapped, resumable); the
learning rule is a static argument of the loss (a separate jitted step per rule).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from innerloop_core import config as core_config
from innerloop_core import optim, runlog
from innerloop_core.lru import GradientRule
from innerloop_core.testing import relative_error
from innerloop_core.train import Deadline, LoopConfig, train
from innerloop_online_lru import model as M
from innerloop_online_lru.config import (
  ClassifyConfig,
  Config,
  CopyConfig,
  DepthSweepConfig,
  ModelConfig,
  OnlineImpl,
  OptConfig,
  Task,
)
from innerloop_tasks import listops, lra
from innerloop_tasks.copy_task import CopySpec, copy_batch, loss_mask

# The recurrent group of the official optimiser (B moves out under b_fast_and_decay).
RECURRENT = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "A")
COPY_DATA_SEED = 1919  # the copy data set: example i is copy_batch(fold_in(key(1919), i))
# Alignment is also read without the encoder: on the copy task its bias gradient dominates the
# whole vector at init (zero inputs give LayerNorm a zero vector, whose sensitivity is 1/√ε).
WITHOUT_ENCODER = ("encoder",)


@dataclasses.dataclass(frozen=True)
class Paths:
  results: pathlib.Path
  runs: pathlib.Path
  root: pathlib.Path


def log(msg: str) -> None:
  print(f"[online-lru] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Optimiser


def _param_name(path) -> str:
  names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return str(names[-1])


def make_optimizer(opt: OptConfig, num_steps: int) -> optax.GradientTransformation:
  """Adam(lr·lr_factor) without decay for the recurrent group, AdamW(lr, wd) for the rest;
  both with linear warm-up then cosine decay to 0 (cosine only when warmup_steps = 0)."""
  recurrent = tuple(n for n in RECURRENT if not (opt.b_fast_and_decay and n.startswith("B_")))
  schedule = optim.Schedule.WARMUP_COSINE if opt.warmup_steps else optim.Schedule.COSINE

  def group(name, lr, wd):
    cfg = optim.OptimConfig(
      name=name,
      learning_rate=lr,
      weight_decay=wd,
      schedule=schedule,
      warmup_steps=opt.warmup_steps,
    )
    return optim.make_optimizer(cfg, num_steps)

  def labels(params):
    return jax.tree_util.tree_map_with_path(
      lambda path, _: "rec" if _param_name(path) in recurrent else "other", params
    )

  return optax.multi_transform(
    {
      "rec": group(optim.OptimizerName.ADAM, opt.learning_rate * opt.lr_factor, 0.0),
      "other": group(optim.OptimizerName.ADAMW, opt.learning_rate, opt.weight_decay),
    },
    labels,
  )


# ---------------------------------------------------------------------------------------------
# Exactness (O1-O3)


def _copy_net(spec: CopySpec, d_model, d_hidden, layers, key, r_min=0.0, r_max=1.0):
  return M.Network(
    spec.input_channels,
    2 * spec.num_bits,
    d_model=d_model,
    d_hidden=d_hidden,
    num_layers=layers,
    r_min=r_min,
    r_max=r_max,
    key=key,
  )


def _flat(state) -> dict[str, np.ndarray]:
  return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(state)}


# One-off gradient evaluations (exactness, alignment) compile far longer than they run; XLA's
# backend optimisations roughly double the compile time and change nothing that is measured.
_quick_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)


def _grad_fn(graphdef, rule: GradientRule, mask):
  def loss(params, x, y):
    return M.copy_loss(nnx.merge(graphdef, params)(x, rule=rule), y, mask)

  return _quick_jit(jax.grad(loss))


def _max_rel(got: dict, want: dict, skip: tuple[str, ...] = ()) -> float:
  errs = [
    relative_error(got[k], want[k]) if np.any(want[k] != 0) else float(np.abs(got[k]).max())
    for k in want
    if not k.startswith(skip)
  ]
  return float(max(errs))


def exactness(cfg: Config, paths: Paths) -> dict:
  exp = cfg.exactness
  spec = CopySpec(pattern_length=exp.pattern_length, pad=exp.pad)
  x, y = copy_batch(jax.random.key(1), exp.batch, spec)
  mask = loss_mask(spec)
  weights = mask.astype(jnp.float32) / jnp.sum(mask)
  out: dict[str, Any] = {"o2_max_rel": {}, "o3_max_abs": {}}
  for layers in exp.depths:
    net = _copy_net(spec, exp.d_model, exp.d_hidden, layers, jax.random.key(0), 0.5, 0.99)
    graphdef, params = nnx.split(net)
    rules = [GradientRule.ONLINE, GradientRule.SPATIAL]
    rules += [GradientRule.BPTT] if layers == 1 else []
    grads = {r: _flat(_grad_fn(graphdef, r, mask)(params, x, y)) for r in rules}

    def step_loss(logits_t, t):
      return M.copy_step_loss(logits_t, y[:, t], weights[t])

    _, stream = _quick_jit(lambda net=net: M.stream_grads(net, x, step_loss))()
    out["o2_max_rel"][f"L{layers}"] = _max_rel(_flat(stream), grads[GradientRule.ONLINE])
    spatial = grads[GradientRule.SPATIAL]
    out["o3_max_abs"][f"L{layers}"] = float(
      max(np.abs(v).max() for k, v in spatial.items() if k.endswith(("nu_log", "theta_log")))
    )
    if layers == 1:
      upstream = ("encoder/", "blocks/0/norm/")
      online, bptt = grads[GradientRule.ONLINE], grads[GradientRule.BPTT]
      out["o1_max_rel"] = _max_rel(online, bptt, skip=upstream)
      out["o1_params_checked"] = sorted(k for k in bptt if not k.startswith(upstream))
      out["encoder_online_max_abs"] = float(np.abs(online["encoder/kernel"]).max())
      out["encoder_bptt_max_abs"] = float(np.abs(bptt["encoder/kernel"]).max())
  out["o2_max_rel_all"] = max(out["o2_max_rel"].values())
  out["o3_max_abs_all"] = max(out["o3_max_abs"].values())
  log(f"exactness: {out['o1_max_rel']=:.2e} {out['o2_max_rel']} {out['o3_max_abs_all']=}")
  return out


# ---------------------------------------------------------------------------------------------
# Alignment vs depth at initialisation (Fig 2A/B)


def alignment_vs_depth(cfg: Config, paths: Paths) -> dict:
  exp = cfg.alignment
  spec = CopySpec(pattern_length=exp.pattern_length, pad=exp.pad)
  mask = loss_mask(spec)
  cos: dict[str, list[float]] = {}
  ratio: dict[str, list[float]] = {}
  cos_stack: dict[str, list[float]] = {}
  for layers in exp.depths:
    graphdef = None
    cos[f"L{layers}"], ratio[f"L{layers}"], cos_stack[f"L{layers}"] = [], [], []
    for seed in exp.seeds:
      net = _copy_net(spec, exp.d_model, exp.d_hidden, layers, jax.random.key(seed))
      if graphdef is None:
        graphdef = nnx.split(net)[0]
        g_bptt = _grad_fn(graphdef, GradientRule.BPTT, mask)
        g_online = _grad_fn(graphdef, GradientRule.ONLINE, mask)
      params = nnx.state(net)
      x, y = copy_batch(jax.random.fold_in(jax.random.key(seed), 1), exp.batch, spec)
      online, bptt = g_online(params, x, y), g_bptt(params, x, y)
      c, r = M.alignment(online, bptt)
      cos[f"L{layers}"].append(float(c))
      ratio[f"L{layers}"].append(float(r))
      cos_stack[f"L{layers}"].append(float(M.alignment(online, bptt, WITHOUT_ENCODER)[0]))
    log(
      f"alignment L={layers}: cosine {np.mean(cos[f'L{layers}']):.3f}, "
      f"without encoder {np.mean(cos_stack[f'L{layers}']):.3f}"
    )
  out = {
    "depths": list(exp.depths),
    "seeds": list(exp.seeds),
    "cosine": cos,
    "norm_ratio": ratio,
    "cosine_without_encoder": cos_stack,
    "definition": "cosine and norm ratio of the online gradient vs BPTT's over all parameters,"
    " at initialisation, one copy batch per seed; cosine_without_encoder: all but the encoder",
  }
  return out


# ---------------------------------------------------------------------------------------------
# Copy task training


def _fingerprint(*parts) -> str:
  # the dataclasses themselves, so that `added_field`s at their defaults are left out
  return core_config.fingerprint(list(parts))


def copy_experiment(name: str, exp: CopyConfig, paths: Paths, deadline: Deadline) -> dict:
  """Trains every rule of `exp` and writes results/<name>.json."""
  out = train_copy(name, exp, paths, deadline)
  runlog.write_json(paths.results / f"{name}.json", out)
  return out


def train_copy(name: str, exp: CopyConfig, paths: Paths, deadline: Deadline) -> dict:
  """Every rule of `exp` on the copy task (checkpoints under runs/<name>/<rule>), summarised."""
  spec = CopySpec(pattern_length=exp.pattern_length, num_bits=exp.num_bits, pad=exp.pad)
  mask = loss_mask(spec)
  data_key = jax.random.key(COPY_DATA_SEED)

  def examples(indices):
    x, y = jax.vmap(lambda i: copy_batch(jax.random.fold_in(data_key, i), 1, spec))(indices)
    return x[:, 0], y[:, 0]

  n_train, n_eval = exp.train_size, exp.eval_size
  data = {
    "val": examples(jnp.arange(n_train, n_train + n_eval)),
    "test": examples(jnp.arange(n_train + n_eval, n_train + 2 * n_eval)),
  }
  m = exp.model
  out: dict[str, Any] = {"rules": {}, "spec": dataclasses.asdict(spec), "T": spec.num_steps}
  for rule in exp.rules:
    init = _network_init(spec.input_channels, 2 * spec.num_bits, m, exp.cell)

    def sample_batch(key, data):
      idx = jax.random.randint(key, (exp.batch,), 0, n_train)
      return examples(idx) + (jax.random.fold_in(key, 1),)

    def loss(net, batch, rule=rule):
      x, y, dkey = batch
      logits = net(x, rule=rule, dropout_key=dkey, dropout_rate=m.dropout)
      return M.copy_loss(logits, y, mask)

    value_and_grad = None
    if exp.online_impl is OnlineImpl.STREAMING and rule is not GradientRule.BPTT:
      if exp.cell is not M.Cell.LRU:
        raise core_config.ConfigError(f"{name}.online_impl=streaming needs {name}.cell=lru")

      def value_and_grad(graphdef, params, batch, rule=rule):
        x, y, dkey = batch
        weights = mask.astype(jnp.float32) / jnp.sum(mask)
        return M.stream_grads(
          nnx.merge(graphdef, params),
          x,
          lambda logits_t, t: M.copy_step_loss(logits_t, y[:, t], weights[t]),
          rule=rule,
          dropout_key=dkey,
          dropout_rate=m.dropout,
        )

    def evaluate(net, data, rule=rule):
      metrics = {}
      for split in ("val", "test"):
        x, y = data[split]
        logits = net(x)
        metrics[f"{split}_loss"] = M.copy_loss(logits, y, mask)
        metrics[f"{split}_acc"] = M.copy_bit_accuracy(logits, y, mask)
      if not exp.track_alignment:
        return metrics
      # alignment of this rule's gradient with BPTT's on (part of) the validation set
      graphdef, params = nnx.split(net)
      x, y = data["val"][0][:128], data["val"][1][:128]

      def g(r):
        return jax.grad(lambda p: M.copy_loss(nnx.merge(graphdef, p)(x, rule=r), y, mask))(params)

      g_rule, g_bptt = g(rule), g(GradientRule.BPTT)
      metrics["cos_bptt"], metrics["norm_ratio_bptt"] = M.alignment(g_rule, g_bptt)
      metrics["cos_bptt_without_encoder"] = M.alignment(g_rule, g_bptt, WITHOUT_ENCODER)[0]
      return metrics

    out["rules"][rule.value] = _train_rule(
      name, rule, exp, paths, deadline, init, sample_batch, loss, evaluate, data, value_and_grad
    )
  acc = {r: float(np.mean(v["best"]["test_acc"])) for r, v in out["rules"].items()}
  if "bptt" in acc and "online" in acc:
    out["online_gap"] = acc["bptt"] - acc["online"]  # BPTT minus the online rule (SnAp-1)
  out["cell"] = exp.cell.value
  return out


def depth_sweep(name: str, sweep: DepthSweepConfig, paths: Paths, deadline: Deadline) -> dict:
  """Fig 2A/B as the paper runs it: the copy network of every depth L trained (`train_copy`,
  checkpoints under runs/<name>/L<L>/<rule>), alignment with BPTT's gradient read at every
  evaluation during training. Per rule and depth, every seed's alignment is the mean of its
  readings after step 0 (step 0, at initialisation, is kept apart as `*_at_init`)."""
  if not sweep.copy.track_alignment:
    raise core_config.ConfigError(f"{name}.copy.track_alignment must be true (it is the point)")
  out: dict[str, Any] = {"depths": list(sweep.depths), "seeds": list(sweep.copy.seeds), "runs": {}}
  for layers in sweep.depths:
    exp = dataclasses.replace(
      sweep.copy, model=dataclasses.replace(sweep.copy.model, num_layers=layers)
    )
    out["runs"][f"L{layers}"] = train_copy(f"{name}/L{layers}", exp, paths, deadline)
  out["T"] = out["runs"][f"L{sweep.depths[0]}"]["T"]
  out["rules"] = {}
  for rule in sweep.copy.rules:
    summary: dict[str, dict[str, list[float]]] = {}
    for layers in sweep.depths:
      run = out["runs"][f"L{layers}"]["rules"][rule.value]
      curve = run["curve"]
      later = np.array(curve["step"]) > 0
      for key in ("cos_bptt", "cos_bptt_without_encoder", "norm_ratio_bptt"):
        readings = np.array(curve[key])  # [evaluations, seeds]
        summary.setdefault(key, {})[f"L{layers}"] = readings[later].mean(0).tolist()
        summary.setdefault(f"{key}_at_init", {})[f"L{layers}"] = readings[~later][0].tolist()
      summary.setdefault("test_acc", {})[f"L{layers}"] = run["best"]["test_acc"]
      summary.setdefault("final_test_acc", {})[f"L{layers}"] = run["final"]["test_acc"]
      log(
        f"{name} {rule.value} L={layers}: test acc {np.mean(run['best']['test_acc']):.4f}; "
        f"cosine during training {np.mean(summary['cos_bptt'][f'L{layers}']):.3f}, without "
        f"encoder {np.mean(summary['cos_bptt_without_encoder'][f'L{layers}']):.3f}"
      )
    out["rules"][rule.value] = summary
  return out


def _network_init(d_input: int, d_output: int, m: ModelConfig, cell: M.Cell):
  """init(key) -> Network of the given sizes (the piece `train` calls per seed)."""

  def init(key):
    return M.Network(
      d_input,
      d_output,
      d_model=m.d_model,
      d_hidden=m.d_hidden,
      num_layers=m.num_layers,
      r_min=m.r_min,
      r_max=m.r_max,
      max_phase=m.max_phase,
      cell=cell,
      activation=m.activation,
      readout_width=m.readout_width,
      key=key,
    )

  return init


def _train_rule(
  name, rule, exp, paths, deadline, init, sample_batch, loss, evaluate, data, value_and_grad=None
):
  """One rule's training run (all seeds vmapped) through the shared loop, summarised."""
  result = train(
    name=f"{name}-{rule.value}",
    init=init,
    sample_batch=sample_batch,
    loss=loss,
    optimizer=make_optimizer(exp.optim, exp.steps),
    loop=LoopConfig(exp.steps, exp.eval_every, exp.checkpoint_every),
    seeds=exp.seeds,
    run_dir=paths.runs / name / rule.value,
    fingerprint=_fingerprint(exp, rule),
    evaluate=evaluate,
    deadline=deadline,
    data=data,
    value_and_grad=value_and_grad,
  )
  summary = _summarise(result.history, "val_loss", ("val_acc", "test_acc"))
  summary["wall_time_s"] = result.wall_time_s
  log(
    f"{name} {rule.value}: best-val test acc {np.mean(summary['best']['test_acc']):.4f} "
    f"({result.wall_time_s:.0f} s)"
  )
  return summary


def _summarise(history: list[dict], select: str, report: tuple[str, ...]) -> dict:
  """Per seed: the metrics at the evaluation with the lowest `select` (the paper's best-val
  protocol), the final ones, and the curves."""
  rows = [r for r in history if select in r]
  seeds = len(rows[0][select])
  best_idx = [int(np.argmin([r[select][s] for r in rows])) for s in range(seeds)]
  keys = sorted(k for k in rows[0] if k != "step")
  return {
    "best": {
      **{k: [rows[i][k][s] for s, i in enumerate(best_idx)] for k in report},
      "step": [rows[i]["step"] for i in best_idx],
    },
    "final": {k: rows[-1][k] for k in keys},
    "curve": {"step": [r["step"] for r in rows], **{k: [r[k] for r in rows] for k in keys}},
  }


# ---------------------------------------------------------------------------------------------
# Sequence classification (Table 2 and its stand-ins)


def load_classification(exp: ClassifyConfig, data_dir: pathlib.Path) -> dict:
  """{"train"|"val"|"test": (x, labels, lengths)}, "vocab": int or None (None: real-valued
  inputs), "classes": int. Raises lra.DataNotProvided when user data is missing."""
  task = exp.task
  if task is Task.DIGITS:
    splits = lra.digits_sequences()
    out = {k: (x, y, np.full(len(y), 64, np.int32)) for k, (x, y) in splits.items()}
    return {**out, "vocab": None, "classes": 10}
  if task is Task.SCIFAR:
    splits = lra.read_cifar10_archive(data_dir / "cifar-10-python.tar.gz")
    out = {k: (x, y, np.full(len(y), 1024, np.int32)) for k, (x, y) in splits.items()}
    return {**out, "vocab": None, "classes": 10}
  if task is Task.IMDB:
    archive = lra.read_imdb_archive(data_dir / "aclImdb_v1.tar.gz")
    texts, labels = archive["train"]
    if exp.imdb_val_from_train:
      perm = np.random.default_rng(42).permutation(len(labels))
      n_val = len(labels) // 10
      val = ([texts[i] for i in perm[:n_val]], labels[perm[:n_val]])
      texts, labels = [texts[i] for i in perm[n_val:]], labels[perm[n_val:]]
    else:
      val = archive["test"]  # as the paper: no val split, the test set doubles as val
    vocab = lra.CharVocab(texts, min_freq=exp.imdb_min_freq)
    splits = {"train": (texts, labels), "val": val, "test": archive["test"]}
    out = {}
    for k, (t, y) in splits.items():
      ids, lengths = vocab.encode(t, exp.max_len)
      out[k] = (ids, y, lengths)
    return {**out, "vocab": len(vocab), "classes": 2}
  if task is Task.LISTOPS:
    splits = {
      k: lra.read_lra_tsv(data_dir / "listops" / f"basic_{k}.tsv") for k in ("train", "val", "test")
    }
  else:  # generated ListOps
    n_train, n_val, n_test = exp.listops_sizes
    samples = listops.generate(
      exp.listops_seed,
      n_train + n_val + n_test,
      max_depth=exp.listops_max_depth,
      min_length=exp.listops_min_length,
      max_length=exp.listops_max_length,
    )
    texts, values = [s for s, _ in samples], np.array([v for _, v in samples])
    cuts = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
    cuts["test"] = (n_train + n_val, n_train + n_val + n_test)
    splits = {k: (texts[a:b], values[a:b]) for k, (a, b) in cuts.items()}
  out = {}
  for k, (t, y) in splits.items():
    ids, lengths = listops.encode(t, exp.max_len)
    out[k] = (ids, np.asarray(y, np.int64), lengths)
  return {**out, "vocab": len(listops.VOCAB), "classes": 10}


def _cached(name: str, exp: ClassifyConfig, paths: Paths, load) -> dict:
  """Generated data sets are cached under runs/ (96 000 full-size ListOps trees take minutes
  to draw, longer than one resumable slice should spend); a cache of other settings is ignored.
  User-provided files are read every time (no copy of the user's data is kept)."""
  if exp.task is not Task.LISTOPS_GENERATED:
    return load()
  keys = ("listops_sizes", "listops_max_depth", "listops_min_length", "listops_max_length")
  tag = _fingerprint({k: getattr(exp, k) for k in keys + ("listops_seed", "max_len")})
  path = paths.runs / f"{name}_data_{tag}.npz"
  if path.is_file():
    with np.load(path) as f:
      splits = {k: (f[f"{k}_x"], f[f"{k}_y"], f[f"{k}_len"]) for k in ("train", "val", "test")}
      return {**splits, "vocab": int(f["vocab"]), "classes": int(f["classes"])}
  loaded = load()
  path.parent.mkdir(parents=True, exist_ok=True)
  arrays = {
    f"{k}_{part}": loaded[k][i]
    for k in ("train", "val", "test")
    for i, part in enumerate(("x", "y", "len"))
  }
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, vocab=loaded["vocab"], classes=loaded["classes"], **arrays)
  tmp.replace(path)  # never leave a half-written cache behind
  return loaded


def _chunked(arrays, chunk: int):
  """Pads the leading axis to a multiple of `chunk` and reshapes to [M, chunk, ...]; also the
  validity mask [M, chunk]."""
  n = arrays[0].shape[0]
  m = -(-n // chunk)
  pad = m * chunk - n
  out = tuple(np.concatenate([a, np.repeat(a[:1], pad, axis=0)]) if pad else a for a in arrays)
  valid = np.arange(m * chunk) < n
  return tuple(a.reshape((m, chunk) + a.shape[1:]) for a in out), valid.reshape(m, chunk)


def classify_experiment(name: str, exp: ClassifyConfig, cfg: Config, paths: Paths, deadline):
  try:
    loaded = _cached(name, exp, paths, lambda: load_classification(exp, paths.root / cfg.data_dir))
  except lra.DataNotProvided as e:
    log(f"{name}: {e}; skipped")
    runlog.write_json(
      paths.results / f"{name}.json", {"status": "data not provided", "why": str(e)}
    )
    return None
  vocab, classes, m = loaded["vocab"], loaded["classes"], exp.model
  train_x, train_y, train_len = loaded["train"]
  d_input = vocab if vocab is not None else train_x.shape[-1]
  data = {
    "train": tuple(jnp.asarray(a) for a in (train_x, train_y.astype(np.int32), train_len)),
  }
  for split in ("val", "test"):
    x, y, lengths = loaded[split]
    arrays, valid = _chunked((x, y.astype(np.int32), lengths), exp.eval_chunk)
    data[split] = tuple(jnp.asarray(a) for a in arrays) + (jnp.asarray(valid),)
  n_train = len(train_y)

  def features(x):
    return jax.nn.one_hot(x, vocab) if vocab is not None else x

  out: dict[str, Any] = {
    "task": exp.task.value,
    "sizes": {k: int(len(loaded[k][1])) for k in ("train", "val", "test")},
    "rules": {},
  }
  for rule in exp.rules:
    init = _network_init(d_input, classes, m, exp.cell)

    def sample_batch(key, data):
      idx = jax.random.randint(key, (exp.batch,), 0, n_train)
      x, y, lengths = (a[idx] for a in data["train"])
      return x, y, lengths, jax.random.fold_in(key, 1)

    def loss(net, batch, rule=rule):
      x, y, lengths, dkey = batch
      logits = net(
        features(x),
        rule=rule,
        readout=M.Readout.POOL_ST,
        dropout_key=dkey,
        dropout_rate=m.dropout,
      )
      return M.class_loss(logits, y, lengths)

    def evaluate(net, data):
      metrics = {}
      for split in ("val", "test"):
        x, y, lengths, valid = data[split]

        def chunk(args):
          x, y, lengths, valid = args
          logits = net(features(x), readout=M.Readout.POOL_ST)
          w = M.class_weights(lengths, logits.shape[1]) * lengths.shape[0]  # per-sequence means
          ce = jax.vmap(optax.softmax_cross_entropy_with_integer_labels, in_axes=(1, None))(
            logits, y
          )
          per_seq = jnp.sum(w * ce, axis=0)
          last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
          hits = (jnp.argmax(last, axis=-1) == y).astype(jnp.float32)
          return jnp.sum(per_seq * valid), jnp.sum(hits * valid)

        loss_sum, hit_sum = jax.lax.map(chunk, (x, y, lengths, valid))
        count = jnp.sum(valid)
        metrics[f"{split}_loss"] = jnp.sum(loss_sum) / count
        metrics[f"{split}_acc"] = jnp.sum(hit_sum) / count
      return metrics

    out["rules"][rule.value] = _train_rule(
      name, rule, exp, paths, deadline, init, sample_batch, loss, evaluate, data
    )
  runlog.write_json(paths.results / f"{name}.json", out)
  return out

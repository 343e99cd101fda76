"""Figs 4 and 5: sine regression through a learned front end, and standard tokens.

Shape notation: B tasks, N context pairs, E embedding width, G grid points, S seeds,
T tokens, D token width.

Fig 4 (sine regression, sheet §3.2 "Sine model"). Our reading of "linear 2→40 (no bias),
residual MLP 40→160→40 (GELU, bias), one LSA (key 40)": the front end is a feature map of
the INPUT only, φ(x) = h + MLP(h) with h = x·W_emb (W_emb: 1→E, no bias), and the target
keeps its own coordinate, so the tokens are e_i = (φ(x_i), y_i) ∈ ℝ^{E+1} and the query is
(φ(x_q), 0). The sheet's "2" counts the two entries of a raw token (x, y); we embed only the
x entry, because a y mixed into the features would leave no y coordinate for the
ŷ = −(query's last entry) readout, and the control could not be "one GD step on the output
layer". With this reading:
  * the trained model is front end → one LSA layer (1 head, key E, queries from all tokens,
    keys/values from the N context tokens only) → ŷ = −(last entry of the query token);
  * the control is a separately parameterised front end → the Prop-1 construction of
    `gd.prop1_params` on the (E+1)-wide tokens with a learned η → the same readout, i.e.
    exactly one GD step from W_0 = 0 on the output layer ŷ = W φ(x_q) fitted to the context
    (φ(x_i), y_i). It is trained end to end through that GD step.
Inits (variance scale, truncated-normal fan-in, one scale for every layer of a model, as
the sheet's init row reads): 0.002/K (K = 1) for emb+MLP+LSA, 0.02 for the control's
embedding + MLP; the control's η starts at `Sine.control_eta_init` (our choice; the sheet
does not give it). Since x is scalar, ∂ŷ/∂x_q is a scalar per task and the per-task cosine
of Fig 2 degenerates to a sign; `alignment.sens_cos` is therefore the cosine of the two
models' slope profiles x_q ↦ ∂ŷ/∂x_q on a grid over [−5, 5], per task, mean over tasks
(`gd.alignment`'s per-task cosine, here a sign agreement, is kept as
`sens_sign_agreement`, with its pred_diff and sens_diff; same definitions, one program).

Fig 5 (standard tokens, sheet §3.1/§3.2). Tokens from `standard_tokens`: x_1, (0…0, y_1),
x_2, …, x_N, (0…0, y_N), x_q, each with a sinusoidal PE concatenated (width Dx + pe_size).
Two untied layers, softmax then linear, 1 head, key `key_size`, no MLP, init variance scale
`init_scale`/2 ("0.02/K"); keys/values are the 2N context tokens (`Mask.CONTEXT_ONLY` with
num_context = 2N), every token queries. Readout: the y coordinate of a y-token is data
index Dx−1 (the LAST data slot), but in an x-token (the query included) that slot holds
x[Dx−1]. Reading the raw slot would add −x_q[Dx−1] to ŷ, which the model cannot cancel
exactly (the query is never a key or value), a loss floor of about ½·E[x²] = 1/24 on top of
GD. Default (`readout="increment"`): ŷ = −(what the layers wrote into the query's slot
Dx−1) = −(e_L[q, Dx−1] − e_0[q, Dx−1]), i.e. the query's y coordinate starts at 0 as in the
constructed tokens; `readout="raw"` reads −e_L[q, Dx−1].
Sensitivity (sheet §4): for the first layer's increment t(e) − e (its output without the
residual identity, which only adds I to k = j) we take the Frobenius norm of the block
∂t(e_j)/∂e_k, for j = 0…2N−2 (so that e_{j+1} is a context token) and k over the 2N context
tokens: `own` k = j, `partner` k = j+1, `other` the rest; mean over positions and tasks.
`partner_x` restricts to x-tokens j (the copy GD needs: x_j reading its y_j).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from innerloop_core import config as core_config
from innerloop_core import figures as F
from innerloop_core import runlog
from innerloop_core.attention import MLP, Mask, SelfAttention, Transformer, linear_attention
from innerloop_core.optim import OptimConfig, OptimizerName, make_optimizer
from innerloop_core.train import Deadline, LoopConfig, TrainResult, train
from innerloop_icl_gd import experiments, gd
from innerloop_icl_gd.config import Config, Sine, StandardTokens
from innerloop_tasks import regression as tasks

_F32 = jnp.float32
SINE_RANGE = (-5.0, 5.0)  # x ~ U(−5, 5) (sheet §3.1)
GRID_POINTS = 101  # x_q grid for the function plots and the slope profiles
FIGURE_TASKS = 3  # validation tasks whose learned functions are plotted
PUBLISHED_GD1_STANDARD = 0.20468888  # 1-step GD loss printed by the normal-token notebook


# ---------------------------------------------------------------------------------------
# Fig 4: sine models
# ---------------------------------------------------------------------------------------


class FrontEnd(nnx.Module):
  """φ(x) = h + MLP(h), h = x W_emb (no bias): [..., 1] -> [..., E]."""

  def __init__(self, embed_dim: int, mlp_hidden: int, *, key: jax.Array, init_scale: float):
    k_emb, k_mlp = jax.random.split(key)
    init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal")
    self.embed = nnx.Param(init(k_emb, (1, embed_dim), _F32))
    self.mlp = MLP(embed_dim, mlp_hidden, key=k_mlp, init_scale=init_scale)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x @ self.embed[...]
    return h + self.mlp(h)


def feature_batch(front: FrontEnd, batch: tasks.RegressionBatch) -> tasks.RegressionBatch:
  """The sine batch with every input replaced by its features φ(x) (Dx becomes E)."""
  return batch._replace(x_context=front(batch.x_context), x_query=front(batch.x_query))


def sine_tokens(front: FrontEnd, batch: tasks.RegressionBatch) -> jax.Array:
  """Tokens [B, N+1, E+1]: (φ(x_i), y_i) for the context, (φ(x_q), 0) last."""
  return tasks.constructed_tokens(feature_batch(front, batch))


class SineLSA(nnx.Module):
  """Embedding + residual MLP + one linear self-attention layer; ŷ = −(query's last entry)."""

  def __init__(self, sine: Sine, *, key: jax.Array):
    k_front, k_attn = jax.random.split(key)
    self.front = FrontEnd(sine.embed_dim, sine.mlp_hidden, key=k_front, init_scale=sine.init_scale)
    self.attention = SelfAttention(
      sine.embed_dim + 1, 1, sine.embed_dim, kind="linear", key=k_attn, init_scale=sine.init_scale
    )

  def __call__(self, batch: tasks.RegressionBatch) -> jax.Array:
    """ŷ [B, 1]."""
    e = sine_tokens(self.front, batch)
    e = e + self.attention(e, mask=Mask.CONTEXT_ONLY, num_context=batch.x_context.shape[1])
    return gd.readout(e, 1)


class SineGD(nnx.Module):
  """The control: the same kind of front end, then the Prop-1 layer (one GD step), η learned."""

  def __init__(self, sine: Sine, *, key: jax.Array):
    self.embed_dim = sine.embed_dim
    self.front = FrontEnd(
      sine.embed_dim, sine.mlp_hidden, key=key, init_scale=sine.control_init_scale
    )
    self.eta = nnx.Param(jnp.asarray(sine.control_eta_init, _F32))

  def __call__(self, batch: tasks.RegressionBatch) -> jax.Array:
    """ŷ [B, 1]."""
    n = batch.x_context.shape[1]
    e = sine_tokens(self.front, batch)
    w = gd.prop1_params(self.embed_dim, 1, self.eta[...], n)
    e = e + linear_attention(
      e, w["w_q"], w["w_k"], w["w_v"], w["w_p"], mask=Mask.CONTEXT_ONLY, num_context=n
    )
    return gd.readout(e, 1)


def sine_validation(cfg: Config) -> tasks.RegressionBatch:
  s = cfg.sine
  return tasks.sine_regression_tasks(
    jax.random.key(cfg.validation_seed),
    cfg.validation_tasks,
    s.num_context,
    convention=s.convention,
  )


def _head(batch: tasks.RegressionBatch, size: int) -> tasks.RegressionBatch:
  return jax.tree.map(lambda a: a[:size], batch)


def slopes(predict, batch: tasks.RegressionBatch) -> tuple[jax.Array, jax.Array]:
  """ŷ [B] and ∂ŷ/∂x_q [B] of a predictor of scalar-input tasks (forward mode, one pass).

  Tasks must not interact inside `predict` (true for every model here).
  """
  y_hat, slope = jax.jvp(
    lambda xq: predict(batch._replace(x_query=xq)),
    (batch.x_query,),
    (jnp.ones_like(batch.x_query),),
  )
  return y_hat[:, 0], slope[:, 0]


def function_profiles(
  predict, batch: tasks.RegressionBatch, grid: jax.Array, chunk: int = 50
) -> tuple[jax.Array, jax.Array]:
  """ŷ and ∂ŷ/∂x_q of every task of `batch` at every query x of its grid: two [B, G] arrays.

  `grid`: [G] query values shared by all tasks, or [B, G] one row per task.
  """
  b = batch.x_query.shape[0]
  grid = jnp.broadcast_to(grid, (b, grid.shape[-1]))

  def one_task(task_and_grid):
    task, row = task_and_grid
    rep = jax.tree.map(lambda a: jnp.broadcast_to(a, row.shape + a.shape), task)
    return slopes(predict, rep._replace(x_query=row[:, None]))

  return jax.lax.map(one_task, (batch, grid), batch_size=min(chunk, b))


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine along the last axis (0 where a vector is 0)."""
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.sum(a * b, axis=-1) / jnp.maximum(norms, jnp.finfo(_F32).tiny)


def _profiles_and_query(predict, batch: tasks.RegressionBatch, grid: jax.Array):
  """ŷ, ∂ŷ/∂x_q on `grid` [B, G] and at each task's own x_q [B], from one traced model."""
  rows = jnp.concatenate(
    [jnp.broadcast_to(grid, (batch.x_query.shape[0], grid.shape[0])), batch.x_query], axis=1
  )
  y, s = function_profiles(predict, batch, rows)
  return y[:, :-1], s[:, :-1], y[:, -1], s[:, -1]


def _alignment_from(a, b) -> dict[str, jax.Array]:
  _, s_a, y_a, q_a = a
  _, s_b, y_b, q_b = b
  return {
    "sens_cos": jnp.mean(_cosine(s_a, s_b)),
    "sens_cos_tasks": _cosine(q_a, q_b),
    "sens_sign_agreement": jnp.mean(_cosine(q_a[:, None], q_b[:, None])),
    "pred_diff": jnp.mean(jnp.abs(y_a - y_b)),
    "sens_diff": jnp.mean(jnp.abs(q_a - q_b)),
  }


def sine_alignment(
  predict_a, predict_b, batch: tasks.RegressionBatch, grid: jax.Array
) -> dict[str, jax.Array]:
  """How alike two sine learners are (jit-friendly; scalars).

  sens_cos: per task, the cosine of the slope profiles x_q ↦ ∂ŷ/∂x_q over `grid` [G], mean
    over tasks (the Fig 4 measure: Dx = 1 makes the per-task cosine of Fig 2 a sign).
  sens_cos_tasks: the cosine of the scalar slopes at each task's own x_q, across tasks.
  pred_diff, sens_diff, sens_sign_agreement: `gd.alignment`'s mean |Δŷ|, mean ‖Δs‖ and mean
    per-task cosine (= sign agreement of the slopes for scalar x), at each task's own x_q.
  """
  return _alignment_from(
    _profiles_and_query(predict_a, batch, grid), _profiles_and_query(predict_b, batch, grid)
  )


def compare_sine_models(
  lsa: TrainResult,
  ctl: TrainResult,
  batch: tasks.RegressionBatch,
  shown: tasks.RegressionBatch,
  grid: jax.Array,
) -> dict[str, Any]:
  """Alignment of seed s of `lsa` with seed s of `ctl` on `batch`, and both models' ŷ on
  `grid` for the `shown` tasks; one compiled program, seeds vmapped. Lists per seed."""
  both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), shown, batch)
  m = shown.x_query.shape[0]

  @jax.jit
  def run(params_a, params_b):
    def one(pa, pb):
      out_a = _profiles_and_query(nnx.merge(lsa.graphdef, pa), both, grid)
      out_b = _profiles_and_query(nnx.merge(ctl.graphdef, pb), both, grid)
      align = _alignment_from(*(tuple(v[m:] for v in out) for out in (out_a, out_b)))
      return align, out_a[0][:m], out_b[0][:m]

    return jax.vmap(one)(params_a, params_b)

  align, y_a, y_b = run(lsa.params, ctl.params)
  return {
    "alignment": {k: np.asarray(v).tolist() for k, v in align.items()},
    "trained": np.asarray(y_a).tolist(),
    "control": np.asarray(y_b).tolist(),
  }


def _adam(learning_rate: float, clip: float | None, steps: int):
  return make_optimizer(
    OptimConfig(name=OptimizerName.ADAM, learning_rate=learning_rate, clip_global_norm=clip), steps
  )


# The Sine fields that shape each run: a changed control setting (or the post-hoc
# alignment_tasks) must not invalidate the LSA checkpoint, and vice versa.
_SINE_COMMON = (
  "steps",
  "seeds",
  "batch_size",
  "eval_every",
  "clip_global_norm",
  "embed_dim",
  "mlp_hidden",
  "num_context",
  "convention",
)
_SINE_OWN = {
  "fig4_lsa": ("learning_rate", "init_scale"),
  "fig4_gd": ("control_learning_rate", "control_init_scale", "control_eta_init"),
}


def _sine_run_fields(s: Sine, name: str) -> dict[str, Any]:
  return {f: getattr(s, f) for f in _SINE_COMMON + _SINE_OWN[name]}


def _train_sine_model(
  name: str,
  cfg: Config,
  paths: experiments.Paths,
  deadline: Deadline,
  init,
  learning_rate: float,
  val: tasks.RegressionBatch,
) -> TrainResult:
  s = cfg.sine
  sample = functools.partial(
    tasks.sine_regression_tasks,
    batch_size=s.batch_size,
    num_context=s.num_context,
    convention=s.convention,
  )

  def loss(model, batch):
    return gd.query_loss(model(batch), batch.y_query)

  def evaluate(model):
    return {"val_loss": gd.query_loss(model(val), val.y_query)}

  return train(
    name=name,
    init=init,
    sample_batch=sample,
    loss=loss,
    optimizer=_adam(learning_rate, s.clip_global_norm, s.steps),
    loop=LoopConfig(s.steps, s.eval_every, cfg.checkpoint_every),
    seeds=range(s.seeds),
    run_dir=paths.runs / name,
    fingerprint=core_config.fingerprint(
      (name, _sine_run_fields(s, name), cfg.validation_tasks, cfg.validation_seed)
    ),
    evaluate=evaluate,
    deadline=deadline,
  )


def train_sine(cfg: Config, paths: experiments.Paths, deadline: Deadline) -> dict[str, Any]:
  """Fig 4: trains emb+MLP+LSA ("fig4_lsa") and emb+MLP+GD ("fig4_gd"), compares them and
  writes `results/<profile>/fig4.json`."""
  s = cfg.sine
  val = sine_validation(cfg)
  lsa = _train_sine_model(
    "fig4_lsa", cfg, paths, deadline, lambda k: SineLSA(s, key=k), s.learning_rate, val
  )
  ctl = _train_sine_model(
    "fig4_gd", cfg, paths, deadline, lambda k: SineGD(s, key=k), s.control_learning_rate, val
  )

  grid = jnp.linspace(*SINE_RANGE, GRID_POINTS, dtype=_F32)
  align_batch = _head(val, min(s.alignment_tasks, cfg.validation_tasks))
  shown = _head(val, FIGURE_TASKS)
  compared = compare_sine_models(lsa, ctl, align_batch, shown, grid)

  amp, phase = shown.w[:, 0, 0], shown.w[:, 0, 1]
  trained_loss, control_loss = lsa.final("val_loss"), ctl.final("val_loss")
  out: dict[str, Any] = {
    "seeds": list(lsa.seeds),
    "trained": {"final_loss": trained_loss, "wall_time_s": lsa.wall_time_s},
    "control": {
      "final_loss": control_loss,
      "wall_time_s": ctl.wall_time_s,
      "eta": [float(ctl.model(i).eta[...]) for i in range(len(ctl.seeds))],
    },
    "ratio": [a / b for a, b in zip(trained_loss, control_loss)],
    "alignment": {
      **compared["alignment"],
      "num_tasks": int(align_batch.x_query.shape[0]),
      "grid_points": GRID_POINTS,
    },
    "curves": {
      "trained": experiments.curves(lsa.history),
      "control": experiments.curves(ctl.history),
    },
    "functions": {
      "x": np.asarray(grid).tolist(),
      "y_true": np.asarray(amp[:, None] * jnp.sin(grid[None] + phase[:, None])).tolist(),
      "x_context": np.asarray(shown.x_context[..., 0]).tolist(),
      "y_context": np.asarray(shown.y_context[..., 0]).tolist(),
      "amplitude": np.asarray(amp).tolist(),
      "phase": np.asarray(phase).tolist(),
      "trained": compared["trained"],
      "control": compared["control"],
    },
    "settings": core_config.to_dict(s),
  }
  runlog.write_json(paths.results / "fig4.json", out)
  return out


# ---------------------------------------------------------------------------------------
# Fig 5: standard tokens
# ---------------------------------------------------------------------------------------

READOUTS = ("increment", "raw")


def build_standard_model(st: StandardTokens, key: jax.Array) -> Transformer:
  """Softmax layer then linear layer, untied, 1 head, no MLP; init scale `init_scale`/2."""
  return Transformer(
    dim=st.input_dim + st.pe_size,
    num_layers=2,
    num_heads=1,
    key_size=st.key_size,
    attention=["softmax", "linear"],
    tied=False,
    init_scale=st.init_scale / 2,
    key=key,
  )


def standard_predict(
  model: Transformer, batch: tasks.RegressionBatch, pe_size: int, readout: str = "increment"
) -> jax.Array:
  """ŷ [B, Dy] of a Transformer on standard tokens; see the module docstring for `readout`."""
  if readout not in READOUTS:
    raise ValueError(f"readout must be one of {READOUTS}; got {readout!r}")
  dx, dy = batch.x_context.shape[-1], batch.y_context.shape[-1]
  width = max(dx, dy)  # a y-token holds y in data slots [width − Dy, width)
  tokens = tasks.standard_tokens(batch, pe_size)
  out = model(tokens, mask=Mask.CONTEXT_ONLY, num_context=2 * batch.x_context.shape[1])
  y_slot = out[:, -1, width - dy : width]
  if readout == "increment":
    y_slot = y_slot - tokens[:, -1, width - dy : width]
  return -y_slot


def first_layer_sensitivity(
  model: Transformer, tokens: jax.Array, num_context: int, chunk: int = 16
) -> dict[str, jax.Array]:
  """Mean ‖∂t(e_j)/∂e_k‖_F of the first layer's increment t(e) − e (module docstring).

  Args:
    model: a Transformer; only `blocks[0]` is used.
    tokens: [B, T, D] standard tokens; the first `num_context` (= 2N) are keys/values.
    num_context: 2N.
  Returns:
    dict(own, partner, partner_x, other) scalars, mean over tasks and positions.
  """
  c = num_context
  if c < 3:
    raise ValueError(f"num_context must be >= 3 for own/partner/other; got {c}")
  block = model.blocks[0]

  def increment(e):  # [T, D] -> [T, D]
    return block(e[None], mask=Mask.CONTEXT_ONLY, num_context=c)[0] - e

  def block_norms(e):  # [T, D] -> [C−1, C]: rows j = 0..C−2, columns k = 0..C−1
    jac = jax.jacfwd(increment)(e)  # [T, D, T, D]
    return jnp.sqrt(jnp.sum(jac[: c - 1, :, :c, :] ** 2, axis=(1, 3)))

  norms = jax.lax.map(block_norms, tokens, batch_size=min(chunk, tokens.shape[0]))
  norms = jnp.mean(norms, axis=0)  # [C−1, C]
  j = np.arange(c - 1)
  other = np.ones((c - 1, c), bool)
  other[j, j] = other[j, j + 1] = False
  return {
    "own": jnp.mean(norms[j, j]),
    "partner": jnp.mean(norms[j, j + 1]),
    "partner_x": jnp.mean(norms[j[::2], j[::2] + 1]),
    "other": jnp.sum(jnp.where(other, norms, 0.0)) / other.sum(),
  }


def standard_validation(cfg: Config) -> tasks.RegressionBatch:
  st = cfg.standard
  return tasks.linear_regression_tasks(
    jax.random.key(cfg.validation_seed),
    cfg.validation_tasks,
    st.num_context,
    st.input_dim,
    1,
    convention=st.convention,
  )


def train_standard_tokens(
  cfg: Config, paths: experiments.Paths, deadline: Deadline
) -> dict[str, Any]:
  """Fig 5: trains the softmax+linear model on standard tokens ("fig5"), compares it with
  line-searched GD-1/GD-2 and writes `results/<profile>/fig5.json`."""
  st = cfg.standard
  if st.readout not in READOUTS:
    raise ValueError(f"standard.readout must be one of {READOUTS}; got {st.readout!r}")
  n = st.num_context
  val = standard_validation(cfg)
  eta1, loss1 = gd.line_search_eta(val, num_steps=1)
  eta2, loss2 = gd.line_search_eta(val, num_steps=2)
  sens_tokens = tasks.standard_tokens(
    _head(val, min(st.sensitivity_tasks, cfg.validation_tasks)), st.pe_size
  )
  sample = functools.partial(
    tasks.linear_regression_tasks,
    batch_size=st.batch_size,
    num_context=n,
    input_dim=st.input_dim,
    output_dim=1,
    convention=st.convention,
  )
  predict = functools.partial(standard_predict, pe_size=st.pe_size, readout=st.readout)

  def loss(model, batch):
    return gd.query_loss(predict(model, batch), batch.y_query)

  def evaluate(model):
    sens = first_layer_sensitivity(model, sens_tokens, 2 * n)
    return {
      "val_loss": gd.query_loss(predict(model, val), val.y_query),
      **{f"sens_{k}": v for k, v in sens.items()},
    }

  name = "fig5"
  result = train(
    name=name,
    init=lambda k: build_standard_model(st, k),
    sample_batch=sample,
    loss=loss,
    optimizer=_adam(st.learning_rate, st.clip_global_norm, st.steps),
    loop=LoopConfig(st.steps, st.eval_every, cfg.checkpoint_every),
    seeds=range(st.seeds),
    run_dir=paths.runs / name,
    fingerprint=core_config.fingerprint((name, st, cfg.validation_tasks, cfg.validation_seed)),
    evaluate=evaluate,
    deadline=deadline,
  )

  final = result.final("val_loss")
  out: dict[str, Any] = {
    "seeds": list(result.seeds),
    "wall_time_s": result.wall_time_s,
    "trained": {"final_loss": final},
    "references": {
      "gd1": {"eta": float(eta1), "loss": float(loss1)},
      "gd2": {"eta": float(eta2), "loss": float(loss2)},
    },
    "ratio_gd1": [v / float(loss1) for v in final],
    "sensitivity": {
      **{k: result.final(f"sens_{k}") for k in ("own", "partner", "partner_x", "other")},
      "partner_over_other": [
        p / max(o, 1e-30) for p, o in zip(result.final("sens_partner"), result.final("sens_other"))
      ],
    },
    "curves": experiments.curves(result.history),
    "settings": core_config.to_dict(st),
  }
  runlog.write_json(paths.results / "fig5.json", out)
  return out


# ---------------------------------------------------------------------------------------
# Figures (from the results dicts only)
# ---------------------------------------------------------------------------------------


def render_sine(res: dict[str, Any], path, note: str) -> None:
  """Fig 4: validation loss of both models over training; learned functions of seed 0."""
  fig, ax = F.subplots(1, 2, width=3.8)
  for who, label, color, ls in (
    ("trained", "emb+MLP+LSA", F.COLORS["trained"], "-"),
    ("control", "emb+MLP+GD (η learned)", F.COLORS["gd"], "--"),
  ):
    c = res["curves"][who]["val_loss"]
    F.plot_seeds(ax[0, 0], c["step"], c["value"], label, color, ls)
  F.plot_published(ax[0, 0], None, 0.006, "published: both ≤ 0.006 (fig. estimate)")
  ax[0, 0].set(
    xlabel="training step", ylabel="validation loss (½ MSE)", yscale="log", title="sine regression"
  )
  ax[0, 0].legend()
  fn = res["functions"]
  x = np.asarray(fn["x"])
  for t in range(len(fn["y_true"])):
    color = f"C{t + 2}"  # one colour per task; line style tells the model
    ax[0, 1].plot(x, fn["y_true"][t], color=color, lw=0.8, ls=":")
    ax[0, 1].plot(fn["x_context"][t], fn["y_context"][t], "o", color=color, ms=3)
    ax[0, 1].plot(x, fn["trained"][0][t], color=color)
    ax[0, 1].plot(x, fn["control"][0][t], color=color, ls="--")
  for ls, label in ((":", "true a·sin(x + ρ)"), ("-", "emb+MLP+LSA"), ("--", "emb+MLP+GD")):
    ax[0, 1].plot([], [], color="#555555", ls=ls, label=label)
  cos = np.mean(res["alignment"]["sens_cos"])
  ratio = np.mean(res["ratio"])
  ax[0, 1].set(
    xlabel="x_q", ylabel="ŷ", title=f"seed 0 · cos ∂ŷ/∂x_q {cos:.3f} · loss ratio {ratio:.2f}"
  )
  ax[0, 1].legend()
  F.savefig(fig, path, note)


def render_standard(res: dict[str, Any], path, note: str) -> None:
  """Fig 5: validation loss vs GD-1/GD-2; first-layer sensitivity to own/partner/other."""
  fig, ax = F.subplots(1, 2, width=3.8)
  c = res["curves"]["val_loss"]
  F.plot_seeds(ax[0, 0], c["step"], c["value"], "softmax + linear", F.COLORS["trained"])
  refs = res["references"]
  ax[0, 0].axhline(refs["gd1"]["loss"], color=F.COLORS["gd"], ls="--", label="GD-1")
  ax[0, 0].axhline(refs["gd2"]["loss"], color=F.COLORS["gd++"], ls="--", label="GD-2")
  F.plot_published(ax[0, 0], None, PUBLISHED_GD1_STANDARD, "published GD-1 (notebook)")
  ax[0, 0].set(
    xlabel="training step",
    ylabel="validation loss (½ MSE)",
    ylim=(0.0, 0.6),
    title="standard tokens",
  )
  ax[0, 0].legend()
  for key, label, color in (
    ("sens_partner", "partner e_j+1", F.COLORS["trained"]),
    ("sens_own", "own e_j", F.COLORS["other"]),
    ("sens_other", "other e_k", F.COLORS["published"]),
  ):
    s = res["curves"][key]
    F.plot_seeds(ax[0, 1], s["step"], s["value"], label, color)
  ax[0, 1].set(
    xlabel="training step", ylabel="mean ‖∂Δ₁(e_j)/∂e_k‖", yscale="log", title="layer-1 sensitivity"
  )
  ax[0, 1].legend()
  F.savefig(fig, path, note)


__all__ = [
  "FrontEnd",
  "SineLSA",
  "SineGD",
  "feature_batch",
  "sine_tokens",
  "slopes",
  "function_profiles",
  "sine_alignment",
  "train_sine",
  "build_standard_model",
  "standard_predict",
  "first_layer_sensitivity",
  "train_standard_tokens",
  "render_sine",
  "render_standard",
]

"""Optimiser groups of the official code, and the config surface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from innerloop_core.config import ConfigError, apply_overrides
from innerloop_online_lru.config import PROFILES, OptConfig
from innerloop_online_lru.experiments import make_optimizer
from innerloop_online_lru.model import Network


def _one_update(opt: OptConfig):
  net = Network(3, 4, d_model=8, d_hidden=4, num_layers=1, key=jax.random.key(0))
  params = nnx.state(net)
  tx = make_optimizer(opt, num_steps=10)
  ones = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(ones, tx.init(params), params)
  return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(updates)}, {
    "/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(params)
  }


def test_recurrent_group_gets_scaled_lr_and_no_weight_decay():
  opt = OptConfig(learning_rate=1e-2, lr_factor=0.5, weight_decay=0.5)
  upd, params = _one_update(opt)
  # Adam's first step moves every coordinate by lr (cosine schedule at step 0 = full lr)
  np.testing.assert_allclose(upd["blocks/0/lru/nu_log"], -0.5e-2, rtol=1e-4)
  np.testing.assert_allclose(upd["blocks/0/lru/B_re"], -0.5e-2, rtol=1e-4)
  # AdamW: −lr·(1 + wd·p) for the rest, LayerNorm scale (p = 1) included
  np.testing.assert_allclose(upd["blocks/0/norm/scale"], -1e-2 * (1 + 0.5), rtol=1e-4)
  want = -1e-2 * (1 + 0.5 * params["blocks/0/lru/C_re"])
  np.testing.assert_allclose(upd["blocks/0/lru/C_re"], want, rtol=1e-4)


def test_b_fast_and_decay_moves_b_to_the_decayed_group():
  opt = OptConfig(learning_rate=1e-2, lr_factor=0.5, weight_decay=0.5, b_fast_and_decay=True)
  upd, params = _one_update(opt)
  want = -1e-2 * (1 + 0.5 * params["blocks/0/lru/B_im"])
  np.testing.assert_allclose(upd["blocks/0/lru/B_im"], want, rtol=1e-4)
  np.testing.assert_allclose(upd["blocks/0/lru/gamma_log"], -0.5e-2, rtol=1e-4)


def test_profiles_and_overrides():
  assert set(PROFILES) == {"tiny", "cpu", "full"}
  cfg = apply_overrides(PROFILES["cpu"], ["copy.rules=bptt,spatial", "copy_dense.cell=lru"])
  assert [r.value for r in cfg.copy.rules] == ["bptt", "spatial"]
  with pytest.raises(ConfigError, match="copy.rules"):
    apply_overrides(PROFILES["cpu"], ["copy.rules=bptt,backprop"])
  assert PROFILES["full"].copy.pattern_length == 20 and PROFILES["full"].copy.pad == 7


@pytest.mark.parametrize("name", ["lra_scifar", "lra_imdb", "lra_listops", "table3_scifar_dense"])
def test_missing_user_data_is_reported_not_fatal(tmp_path, name):
  from innerloop_core import runlog
  from innerloop_online_lru import experiments

  cfg = PROFILES["full"]
  paths = experiments.Paths(results=tmp_path / "results", runs=tmp_path / "runs", root=tmp_path)
  paths.results.mkdir()
  assert experiments.classify_experiment(name, getattr(cfg, name), cfg, paths, None) is None
  status = runlog.read_json(paths.results / f"{name}.json")
  assert status["status"] == "data not provided" and str(tmp_path / "data") in status["why"]


def test_generated_listops_is_cached_under_runs(tmp_path):
  from innerloop_online_lru import experiments

  exp = PROFILES["tiny"].listops
  paths = experiments.Paths(results=tmp_path, runs=tmp_path / "runs", root=tmp_path)
  calls = []

  def load():
    calls.append(1)
    return experiments.load_classification(exp, tmp_path)

  first = experiments._cached("listops", exp, paths, load)
  second = experiments._cached("listops", exp, paths, load)
  assert len(calls) == 1 and len(list((tmp_path / "runs").glob("listops_data_*.npz"))) == 1
  for split in ("train", "val", "test"):
    for a, b in zip(first[split], second[split], strict=True):
      np.testing.assert_array_equal(a, b)
  assert second["vocab"] == 18 and second["classes"] == 10


@pytest.mark.slow
def test_streaming_estimator_trains_like_the_stop_gradient_form(tmp_path):
  """The same online gradient through `train(value_and_grad=stream_grads)`: after a few Adam
  steps with dropout, the validation losses of both implementations agree."""
  import dataclasses

  from innerloop_core.lru import GradientRule
  from innerloop_online_lru import experiments
  from innerloop_online_lru.config import OnlineImpl

  base = dataclasses.replace(
    PROFILES["tiny"].copy,
    rules=(GradientRule.ONLINE,),
    steps=3,
    eval_every=3,
    checkpoint_every=3,
    model=dataclasses.replace(PROFILES["tiny"].copy.model, dropout=0.2),
  )
  losses = {}
  for impl in OnlineImpl:
    paths = experiments.Paths(tmp_path / impl.value, tmp_path / impl.value / "runs", tmp_path)
    paths.results.mkdir(parents=True)
    exp = dataclasses.replace(base, online_impl=impl)
    out = experiments.copy_experiment("copy", exp, paths, None)
    curve = out["rules"]["online"]["curve"]["val_loss"]
    losses[impl] = np.array(curve[-1])
    # the steps moved the model by far more than the tolerance below (not a vacuous match)
    assert np.abs(losses[impl] - np.array(curve[0])).max() > 1e-3 * np.abs(curve[0]).max()
  np.testing.assert_allclose(
    losses[OnlineImpl.STREAMING], losses[OnlineImpl.STOP_GRADIENT], rtol=1e-4
  )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["copy_gru", "copy_gru_1l"])
def test_gru_copy_row_runs_every_rule(tmp_path, name):
  """Table 1's GRU rows (4L; 1L without block activation, ReLU-MLP readout) end to end on a toy
  copy task: every rule trains and is reported."""
  import dataclasses

  from innerloop_core.train import Deadline
  from innerloop_online_lru import experiments
  from innerloop_online_lru.model import Cell

  base = getattr(PROFILES["cpu"], name)
  exp = dataclasses.replace(
    base,
    pattern_length=3,
    pad=2,
    model=dataclasses.replace(
      base.model, d_model=8, d_hidden=8, readout_width=min(base.model.readout_width, 16)
    ),
    seeds=(0,),
    batch=4,
    steps=4,
    eval_every=2,
    checkpoint_every=4,
    train_size=16,
    eval_size=8,
  )
  assert exp.cell is Cell.GRU
  paths = experiments.Paths(results=tmp_path / "results", runs=tmp_path / "runs", root=tmp_path)
  out = experiments.copy_experiment(name, exp, paths, Deadline(None))
  assert out["cell"] == "gru" and set(out["rules"]) == {r.value for r in exp.rules}
  assert np.isfinite(out["online_gap"])


def test_gru_1l_network_has_no_glu_and_an_mlp_readout():
  from innerloop_online_lru.experiments import _network_init
  from innerloop_online_lru.model import Cell

  for profile, width in (("cpu", 512), ("full", 1072)):
    m = PROFILES[profile].copy_gru_1l.model
    assert m.num_layers == 1 and m.readout_width == width
    net = _network_init(8, 14, m, Cell.GRU)(jax.random.key(0))
    names = {"/".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(net))}
    assert not any("glu" in n for n in names)
    assert "decoder/hidden/kernel" in names
    assert nnx.state(net)["decoder"]["out"]["kernel"].shape == (width, 14)


def test_depth_sweep_configs_resolve():
  from innerloop_core.lru import GradientRule

  assert not PROFILES["tiny"].depth_sweep.enabled
  for profile, seeds in (("cpu", 3), ("full", 10)):
    sweep = PROFILES[profile].depth_sweep
    assert sweep.enabled and sweep.depths == (1, 2, 3, 4, 5) and len(sweep.copy.seeds) == seeds
    assert sweep.copy.rules == (GradientRule.ONLINE,) and sweep.copy.track_alignment
  full = PROFILES["full"].depth_sweep.copy  # the sheet's Fig 2A/B row
  assert (full.model.d_model, full.model.d_hidden, full.model.dropout) == (128, 64, 0.1)
  assert (full.batch, full.steps, full.eval_every, full.optim.lr_factor) == (50, 10_000, 100, 0.5)
  assert full.seeds == tuple(range(201, 211))


@pytest.mark.slow
def test_depth_sweep_writes_results_and_resumes_identically(tmp_path):
  """A toy sweep through the train stage: every depth trains, alignment is summarised from the
  readings after step 0, and a second call resumes from the finished checkpoints unchanged."""
  import dataclasses

  from innerloop_core import runlog
  from innerloop_core.cli import PaperPaths
  from innerloop_core.train import Deadline
  from innerloop_online_lru import pipeline
  from innerloop_online_lru.config import CopyConfig, DepthSweepConfig, ExactnessConfig

  tiny = PROFILES["tiny"]
  toy = DepthSweepConfig(
    depths=(1, 2),
    copy=dataclasses.replace(
      tiny.copy,
      model=dataclasses.replace(tiny.copy.model, d_model=8, d_hidden=4),
      rules=tiny.copy.rules[1:],
      steps=4,
      eval_every=2,
      checkpoint_every=2,
      train_size=16,
      eval_size=8,
      track_alignment=True,
    ),
  )
  cfg = dataclasses.replace(
    tiny,
    exactness=ExactnessConfig(enabled=False),
    copy=CopyConfig(enabled=False),
    listops=dataclasses.replace(tiny.listops, enabled=False),
    depth_sweep=toy,
  )
  paths = PaperPaths(root=tmp_path, profile="tiny")
  pipeline.train_all(cfg, paths, Deadline(None))
  first = runlog.read_json(paths.results / "depth_sweep.json")
  assert (paths.runs / "depth_sweep" / "L2" / "online" / "checkpoints").is_dir()
  online = first["rules"]["online"]
  curve = first["runs"]["L2"]["rules"]["online"]["curve"]
  assert curve["step"] == [0, 2, 4]
  np.testing.assert_allclose(online["cos_bptt"]["L2"], np.mean(curve["cos_bptt"][1:], axis=0))
  assert online["cos_bptt_at_init"]["L2"] == curve["cos_bptt"][0]
  for key in ("cos_bptt_without_encoder", "norm_ratio_bptt", "test_acc", "final_test_acc"):
    assert set(online[key]) == {"L1", "L2"} and len(online[key]["L1"]) == len(toy.copy.seeds)
  pipeline.train_all(cfg, paths, Deadline(None))
  second = runlog.read_json(paths.results / "depth_sweep.json")

  def metrics(out):  # all but the wall times (the checkpoint keeps the one at its last save)
    for run in out["runs"].values():
      run["rules"]["online"].pop("wall_time_s")
    return out

  assert metrics(second) == metrics(first)

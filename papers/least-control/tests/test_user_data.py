"""The full profile's path on user-provided files: MNIST IDX files written here in the
original format are found under the paper directory, trained on, and reported; absent
files are reported as skipped."""

import dataclasses
import struct

import numpy as np

from innerloop_core.fixed_point import SolverConfig
from innerloop_core.train import Deadline
from innerloop_least_control import experiments
from innerloop_least_control.config import PROFILES
from innerloop_least_control.methods import ControlConfig, GradConfig
from innerloop_tasks import images


def _write_mnist(directory, n_train=96, n_test=32):
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    # class-dependent bright square so the task is learnable
    imgs = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
      imgs[i, 2 * c : 2 * c + 6, 4:10] = 255
    with open(directory / f"{prefix}-images-idx3-ubyte", "wb") as fh:
      fh.write(struct.pack(">iiii", images.IDX_IMAGES_MAGIC, n, 28, 28) + imgs.tobytes())
    with open(directory / f"{prefix}-labels-idx1-ubyte", "wb") as fh:
      fh.write(struct.pack(">ii", images.IDX_LABELS_MAGIC, n) + labels.tobytes())


def test_full_profile_trains_on_user_mnist(tmp_path):
  _write_mnist(tmp_path / "data" / "mnist")
  small = SolverConfig(tol=1e-5, max_iter=20, per_leaf=True)
  table = dataclasses.replace(
    PROFILES["full"].table,
    hidden=8,
    epochs=2,
    seeds=1,
    evals=1,
    batch_size=32,
    rows=("ff-bp", "rnn-lcp-di"),
    control=ControlConfig(solver=small),
    grad=GradConfig(forward=SolverConfig(max_iter=20), backward=SolverConfig(max_iter=20)),
    eval_solver=SolverConfig(max_iter=20),
  )
  assert table.data_dir == "data/mnist"  # relative to the paper directory
  paths = experiments.Paths(results=tmp_path / "results", runs=tmp_path / "runs")
  out = experiments.run_table(table, "table1", paths, Deadline(None), root=tmp_path)
  assert out["dataset"].name == "mnist" and out["dataset"].x_train.shape == (96, 784)
  res = (tmp_path / "results" / "table1.json").read_text()
  assert '"ff-bp"' in res and '"rnn-lcp-di"' in res


def test_absent_user_data_is_data_not_provided(tmp_path):
  table = PROFILES["full"].table2
  try:
    experiments.load_dataset(table, tmp_path)
  except images.DataNotProvided as e:
    assert "data_batch_1" in str(e)
  else:
    raise AssertionError("expected DataNotProvided")

"""Image loaders, each read back from small files written here in the original formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from innerloop_core.config import ConfigError
from innerloop_tasks import images


def _write_idx(path, array, gz=False):
  array = np.asarray(array, np.uint8)
  if array.ndim == 3:
    header = struct.pack(">iiii", images.IDX_IMAGES_MAGIC, *array.shape)
  else:
    header = struct.pack(">ii", images.IDX_LABELS_MAGIC, *array.shape)
  opener = gzip.open if gz else open
  with opener(path, "wb") as fh:
    fh.write(header + array.tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path, gz):
  rng = np.random.default_rng(0)
  data = {}
  for prefix, n in (("train", 7), ("t10k", 3)):
    imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", imgs, gz)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    data[prefix] = (imgs, labels)
  ds = images.load_mnist(tmp_path)
  assert ds.x_train.shape == (7, 784) and ds.x_test.shape == (3, 784)
  assert ds.shape == (1, 28, 28) and ds.x_train.dtype == np.float32
  np.testing.assert_array_equal(ds.x_train * 255.0, data["train"][0].reshape(7, -1))
  np.testing.assert_array_equal(ds.y_test, data["t10k"][1])
  assert ds.x_train.max() <= 1.0


def test_idx_rejects_a_bad_magic_and_a_short_file(tmp_path):
  (tmp_path / "bad").write_bytes(struct.pack(">i", 1234) + b"\0" * 8)
  with pytest.raises(ValueError, match="magic 1234"):
    images.read_idx(tmp_path / "bad")
  (tmp_path / "short").write_bytes(struct.pack(">ii", images.IDX_LABELS_MAGIC, 5) + b"\1\2")
  with pytest.raises(ValueError, match="holds 2"):
    images.read_idx(tmp_path / "short")


def test_missing_files_say_data_not_provided(tmp_path):
  with pytest.raises(images.DataNotProvided, match="data not provided"):
    images.load_mnist(tmp_path)
  with pytest.raises(images.DataNotProvided, match="data_batch_1"):
    images.load_cifar10(tmp_path)
  with pytest.raises(ConfigError, match="dataset must be one of"):
    images.load("imagenet")


def test_cifar_pickles_channel_major(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  written = {}
  for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    labels = list(rng.integers(0, 10, size=2))
    with open(root / name, "wb") as fh:
      pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
    written[name] = (data, labels)
  raw = images.load_cifar10(tmp_path, normalize=False)
  assert raw.x_train.shape == (10, 3072) and raw.x_test.shape == (2, 3072)
  np.testing.assert_allclose(raw.x_train[:2] * 255.0, written["data_batch_1"][0], atol=1e-4)
  np.testing.assert_array_equal(raw.y_test, written["test_batch"][1])
  norm = images.load_cifar10(tmp_path)
  # channel-major: entries 0..1023 are red, normalised with the red mean and std
  red = (written["data_batch_1"][0][0, :1024] / 255.0 - 0.4914) / 0.2023
  np.testing.assert_allclose(norm.x_train[0, :1024], red, rtol=1e-5, atol=1e-5)
  blue = (written["data_batch_1"][0][0, 2048:] / 255.0 - 0.4465) / 0.201
  np.testing.assert_allclose(norm.x_train[0, 2048:], blue, rtol=1e-5, atol=1e-5)


def test_digits_split_is_stratified_and_disjoint():
  ds = images.load_digits()
  assert ds.x_train.shape[1] == 64 and len(ds.y_train) + len(ds.y_test) == 1797
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
  counts = np.bincount(ds.y_test, minlength=10)
  assert counts.min() >= 34 and counts.max() <= 38
  train_rows = {r.tobytes() for r in ds.x_train}
  assert sum(r.tobytes() in train_rows for r in ds.x_test) < 10  # digits has few duplicates


def test_mnist1d_style_is_deterministic_balanced_and_learnable():
  a = images.make_mnist1d_style(num_samples=500)
  b = images.make_mnist1d_style(num_samples=500)
  np.testing.assert_array_equal(a.x_train, b.x_train)
  assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40)
  assert np.bincount(np.concatenate([a.y_train, a.y_test])).tolist() == [50] * 10
  # the label is in the signal: 1-nearest-neighbour is far above chance (10 %), and more so
  # without the noise and shear (measured: 0.60 and 0.93 at 2 000 samples)
  for kw, floor in ((dict(), 0.45), (dict(noise=0, correlated_noise=0, max_shear=0), 0.85)):
    d = images.make_mnist1d_style(num_samples=2000, **kw)
    dist = ((d.x_test[:, None] - d.x_train[None]) ** 2).sum(-1)
    assert (d.y_train[dist.argmin(1)] == d.y_test).mean() > floor, kw


def _write_omniglot(root, split, chars, drawers, as_zip):
  """Writes 105×105 1-bit PNGs, black strokes on white as the release: character c, drawer d
  has a black square whose side encodes (c, d)."""
  import zipfile

  from PIL import Image

  expected = {}
  files = {}
  for c, (alphabet, char) in enumerate(chars):
    for d in range(drawers):
      img = np.full((105, 105), 255, np.uint8)
      size = 15 + 10 * c + 5 * d
      img[:size, :size] = 0
      path = f"{split}/{alphabet}/{char}/{c:04d}_{d:02d}.png"
      buf = __import__("io").BytesIO()
      Image.fromarray(img).convert("1").save(buf, format="PNG")
      files[path] = buf.getvalue()
      expected[(c, d)] = size / 105.0
  if as_zip:
    with zipfile.ZipFile(root / f"{split}.zip", "w") as zf:
      for path, data in files.items():
        zf.writestr(path, data)
  else:
    for path, data in files.items():
      (root / path).parent.mkdir(parents=True, exist_ok=True)
      (root / path).write_bytes(data)
  return expected


@pytest.mark.parametrize("as_zip", [False, True])
def test_omniglot_round_trip(tmp_path, as_zip):
  train_chars = [("Alpha", "character01"), ("Alpha", "character02"), ("Beta", "character01")]
  test_chars = [("Gamma", "character01"), ("Gamma", "character02")]
  train_exp = _write_omniglot(tmp_path, "images_background", train_chars, 3, as_zip)
  _write_omniglot(tmp_path, "images_evaluation", test_chars, 3, as_zip)
  train, test = images.load_omniglot(tmp_path, side=21)
  assert train.shape == (3, 3, 21, 21) and test.shape == (2, 3, 21, 21)
  assert train.dtype == np.float32 and train.min() >= 0.0 and train.max() <= 1.0
  for (c, d), frac in train_exp.items():
    # Inverted (strokes = 1); 105 = 5·21, so the box filter keeps the square's area exactly.
    np.testing.assert_allclose(train[c, d].sum(), (frac * 21) ** 2, rtol=1e-5)
    assert train[c, d, 0, 0] == 1.0 and train[c, d, -1, -1] == 0.0


def test_omniglot_missing_is_data_not_provided(tmp_path):
  with pytest.raises(images.DataNotProvided, match="images_background"):
    images.load_omniglot(tmp_path)


def test_omniglot_bad_png_names_the_file(tmp_path):
  _write_omniglot(tmp_path, "images_background", [("Alpha", "character01")], 2, False)
  _write_omniglot(tmp_path, "images_evaluation", [("Beta", "character01")], 2, False)
  (tmp_path / "images_evaluation/Beta/character01/0000_01.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="images_evaluation/Beta/character01/0000_01.png"):
    images.load_omniglot(tmp_path)

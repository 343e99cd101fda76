"""Image classification data: readers for user-provided MNIST / CIFAR-10 files and two
offline stand-ins (scikit-learn's digits, an MNIST-1D-style generator).

Every loader returns a `Dataset` of numpy arrays: images flattened to (N, D) float32 and
labels (N,) int32, already split into train and test. Nothing is downloaded: MNIST and
CIFAR-10 are read from a directory the user fills, and `DataNotProvided` (a one-line message
naming the missing files) is raised when they are absent.

Formats (as the original distributions ship them):
  MNIST IDX  `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`: big-endian int32 magic
             (2051 images, 2049 labels), then the dimensions (N, rows, cols | N), then uint8.
  CIFAR-10   python pickles `data_batch_1..5`, `test_batch` (in `cifar-10-batches-py/` or
             the directory itself): b'data' N×3072 uint8, channel-major (3×32×32), b'labels'.
  Omniglot   `images_background` (meta-train) and `images_evaluation` (meta-test), each a
             folder or the `.zip` of the official repository: <alphabet>/<character>/*.png,
             105×105 1-bit images, black strokes on white, one file per drawer.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import io
import pathlib
import pickle
import struct
import zipfile

import numpy as np
from PIL import Image

from innerloop_core.config import parse_enum

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.201)  # the values of the least-control code (not the true std)


class DataNotProvided(FileNotFoundError):
  """The user has not placed the dataset's files where the loader looks."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  x_train: np.ndarray  # (N_train, D) float32
  y_train: np.ndarray  # (N_train,) int32
  x_test: np.ndarray  # (N_test, D) float32
  y_test: np.ndarray  # (N_test,) int32
  num_classes: int
  shape: tuple[int, ...]  # the shape of one image before flattening (C, H, W) or (L,)
  name: str


class DatasetName(enum.Enum):
  MNIST = "mnist"  # user-provided IDX files
  CIFAR10 = "cifar10"  # user-provided python pickles
  DIGITS = "digits"  # scikit-learn's 8×8 digits (offline stand-in for MNIST)
  MNIST1D = "mnist1d"  # MNIST-1D-style sequences generated here (offline stand-in)


# ------------------------------------------------------------------------------ MNIST IDX
def _open(path: pathlib.Path):
  return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | pathlib.Path) -> np.ndarray:
  """Reads one IDX file (images: magic 2051, (N, rows, cols); labels: 2049, (N,)), uint8."""
  path = pathlib.Path(path)
  with _open(path) as fh:
    magic = struct.unpack(">i", fh.read(4))[0]
    if magic == IDX_IMAGES_MAGIC:
      dims = struct.unpack(">iii", fh.read(12))
    elif magic == IDX_LABELS_MAGIC:
      dims = struct.unpack(">i", fh.read(4))
    else:
      raise ValueError(
        f"{path}: magic {magic} is neither {IDX_IMAGES_MAGIC} nor {IDX_LABELS_MAGIC}"
      )
    data = np.frombuffer(fh.read(), dtype=np.uint8)
  expected = int(np.prod(dims))
  if data.size != expected:
    raise ValueError(f"{path}: header says {dims} = {expected} bytes, file holds {data.size}")
  return data.reshape(dims)


def _find(directory: pathlib.Path, stem: str) -> pathlib.Path:
  for name in (
    stem,
    stem + ".gz",
    stem.replace("-idx", ".idx"),
    stem.replace("-idx", ".idx") + ".gz",
  ):
    if (directory / name).is_file():
      return directory / name
  raise DataNotProvided(f"data not provided: {directory / stem}[.gz] is missing")


def load_mnist(directory: str | pathlib.Path) -> Dataset:
  """MNIST from the four IDX files in `directory`; pixels scaled to [0, 1], no normalisation."""
  directory = pathlib.Path(directory)
  parts = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.shape[0] != labels.shape[0]:
      raise ValueError(
        f"{directory}: {split} has {images.shape[0]} images, {labels.shape[0]} labels"
      )
    parts[split] = (images.reshape(images.shape[0], -1).astype(np.float32) / 255.0, labels)
  rows, cols = read_idx(_find(directory, "t10k-images-idx3-ubyte")).shape[1:]
  return Dataset(
    parts["train"][0],
    parts["train"][1].astype(np.int32),
    parts["test"][0],
    parts["test"][1].astype(np.int32),
    10,
    (1, rows, cols),
    "mnist",
  )


# ------------------------------------------------------------------------- CIFAR pickles
def read_cifar_batch(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """One CIFAR-10 python pickle -> (N, 3, 32, 32) uint8 images and (N,) labels."""
  with open(path, "rb") as fh:
    batch = pickle.load(fh, encoding="bytes")
  data = np.asarray(batch[b"data"], dtype=np.uint8)
  labels = np.asarray(batch[b"labels"], dtype=np.int32)
  if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
    raise ValueError(f"{path}: expected data N×3072 and N labels, got {data.shape}, {labels.shape}")
  return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(directory: str | pathlib.Path, normalize: bool = True) -> Dataset:
  """CIFAR-10 from `directory` (or its `cifar-10-batches-py/`); channel-major flattening.

  normalize: subtract CIFAR_MEAN and divide by CIFAR_STD per channel (the reference code's
  constants), after scaling to [0, 1]."""
  directory = pathlib.Path(directory)
  if (directory / "cifar-10-batches-py").is_dir():
    directory = directory / "cifar-10-batches-py"
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  missing = [n for n in names if not (directory / n).is_file()]
  if missing:
    raise DataNotProvided(f"data not provided: {directory} lacks {', '.join(missing)}")
  batches = [read_cifar_batch(directory / n) for n in names]

  def prep(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    if normalize:
      mean = np.asarray(CIFAR_MEAN, np.float32)[None, :, None, None]
      std = np.asarray(CIFAR_STD, np.float32)[None, :, None, None]
      x = (x - mean) / std
    return x.reshape(x.shape[0], -1)

  x_train = prep(np.concatenate([b[0] for b in batches[:5]]))
  y_train = np.concatenate([b[1] for b in batches[:5]])
  return Dataset(x_train, y_train, prep(batches[5][0]), batches[5][1], 10, (3, 32, 32), "cifar10")


# ----------------------------------------------------------------- offline stand-ins
def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
  """scikit-learn's 1 797 8×8 digits (bundled in the wheel), pixels /16 into [0, 1]; a
  stratified split drawn with `seed`."""
  from sklearn.datasets import load_digits as _sk_digits

  bunch = _sk_digits()
  x = bunch.data.astype(np.float32) / 16.0
  y = bunch.target.astype(np.int32)
  rng = np.random.default_rng(seed)
  test = np.zeros(len(y), bool)
  for c in range(10):
    idx = np.flatnonzero(y == c)
    test[rng.permutation(idx)[: int(round(test_fraction * len(idx)))]] = True
  return Dataset(x[~test], y[~test], x[test], y[test], 10, (1, 8, 8), "digits")


# Ten length-12 templates of our own making (one per class): bumps, steps, ramps and
# oscillations that stay distinguishable after shifts, scaling and shear.
_TEMPLATES = (
  np.asarray(
    [
      [0, 0, 1, 3, 5, 6, 6, 5, 3, 1, 0, 0],  # 0: one broad bump
      [0, 0, 0, 0, 0, 6, 6, 0, 0, 0, 0, 0],  # 1: narrow spike
      [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6],  # 2: ramp then plateau
      [0, 4, 6, 4, 0, 0, 0, 4, 6, 4, 0, 0],  # 3: two bumps
      [6, 6, 6, 6, 6, 6, 0, 0, 0, 0, 0, 0],  # 4: step down
      [0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6],  # 5: step up
      [0, 6, 0, 6, 0, 6, 0, 6, 0, 6, 0, 6],  # 6: fast oscillation
      [6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5],  # 7: valley
      [0, 3, 6, 3, 0, -3, -6, -3, 0, 3, 6, 3],  # 8: slow wave
      [0, 0, 6, 0, 0, -6, 0, 0, 6, 0, 0, -6],  # 9: alternating spikes
    ],
    np.float32,
  )
  / 6.0
)


def make_mnist1d_style(
  num_samples: int = 5000,
  length: int = 40,
  test_fraction: float = 0.2,
  seed: int = 42,
  noise: float = 0.25,
  correlated_noise: float = 0.25,
  max_shear: float = 0.75,
) -> Dataset:
  """A 1-D digit task in the spirit of MNIST-1D (Greydanus 2020), generated offline.

  NOT the mnist1d package's data: the templates and constants are ours (the package's own
  templates are not reproduced here). Each sample: a class template (length 12), padded
  into a 36-sample window at a random offset, randomly scaled (0.8–1.2) and sheared (a
  linear ramp), resampled to `length` points, plus smoothed (correlated) and iid Gaussian
  noise. Labels are balanced; the split keeps the last `test_fraction` of a shuffled order."""
  rng = np.random.default_rng(seed)
  y = np.arange(num_samples) % 10
  rng.shuffle(y)
  window = 36
  grid = np.linspace(0, window - 1, length)
  xs = np.empty((num_samples, length), np.float32)
  smooth = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
  smooth /= smooth.sum()
  for i, label in enumerate(y):
    signal = np.zeros(window, np.float32)
    start = rng.integers(0, window - 12 + 1)
    scale = rng.uniform(0.8, 1.2)
    signal[start : start + 12] = scale * _TEMPLATES[label]
    signal = signal + rng.uniform(-max_shear, max_shear) * np.linspace(-0.5, 0.5, window)
    sample = np.interp(grid, np.arange(window), signal)
    corr = np.convolve(rng.normal(size=length + 8), smooth, mode="valid")[:length]
    xs[i] = sample + correlated_noise * corr + noise * rng.normal(size=length)
  n_test = int(round(test_fraction * num_samples))
  return Dataset(
    xs[n_test:],
    y[n_test:].astype(np.int32),
    xs[:n_test],
    y[:n_test].astype(np.int32),
    10,
    (length,),
    "mnist1d-style",
  )


# ------------------------------------------------------------------------------ Omniglot
OMNIGLOT_SPLITS = ("images_background", "images_evaluation")


def _omniglot_files(directory: pathlib.Path, split: str) -> dict[str, list]:
  """{"alphabet/character": [(name, reader), ...]} for one split, from the folder or its zip;
  each reader returns the PNG's bytes."""
  folder, archive = directory / split, directory / f"{split}.zip"
  chars: dict[str, list] = {}
  if folder.is_dir():
    for png in sorted(folder.glob("*/*/*.png")):
      chars.setdefault(f"{png.parent.parent.name}/{png.parent.name}", []).append(
        (png.name, png.read_bytes)
      )
  elif archive.is_file():
    zf = zipfile.ZipFile(archive)
    for name in sorted(n for n in zf.namelist() if n.endswith(".png")):
      parts = pathlib.PurePosixPath(name).parts
      if len(parts) < 3:
        continue
      key = f"{parts[-3]}/{parts[-2]}"
      chars.setdefault(key, []).append((parts[-1], lambda n=name: zf.read(n)))
  else:
    raise DataNotProvided(f"data not provided: neither {folder} nor {archive} exists")
  if not chars:
    raise DataNotProvided(f"data not provided: no <alphabet>/<character>/*.png under {split}")
  return chars


def load_omniglot(directory: str | pathlib.Path, side: int = 28) -> tuple[np.ndarray, np.ndarray]:
  """(meta-train (C, I, side, side), meta-test (C', I, side, side)) float32 in [0, 1], strokes
  = 1 (the PNGs are inverted), box-filtered down from 105×105; characters sorted by
  alphabet/character, drawings by file name. I = the fewest drawings any character has (20 in
  the official release)."""
  directory = pathlib.Path(directory)
  out = []
  for split in OMNIGLOT_SPLITS:
    chars = _omniglot_files(directory, split)
    per_class = min(len(v) for v in chars.values())
    arr = np.zeros((len(chars), per_class, side, side), np.float32)
    for c, key in enumerate(sorted(chars)):
      for i, (name, read) in enumerate(chars[key][:per_class]):
        try:
          img = Image.open(io.BytesIO(read())).convert("L")
        except OSError as e:  # PIL's UnidentifiedImageError is an OSError
          raise ValueError(f"Omniglot: {split}/{key}/{name} is not a readable PNG ({e})") from e
        arr[c, i] = (
          1.0 - np.asarray(img.resize((side, side), Image.Resampling.BOX), np.float32) / 255.0
        )
    out.append(arr)
  return out[0], out[1]


def load(name: DatasetName | str, data_dir: str | pathlib.Path | None = None) -> Dataset:
  """One dataset by name; MNIST and CIFAR-10 need `data_dir` (user-provided files)."""
  name = parse_enum(name, DatasetName, "dataset")
  if name is DatasetName.DIGITS:
    return load_digits()
  if name is DatasetName.MNIST1D:
    return make_mnist1d_style()
  if data_dir is None:
    raise DataNotProvided(f"data not provided: dataset {name.value!r} needs a data_dir")
  if name is DatasetName.MNIST:
    return load_mnist(data_dir)
  return load_cifar10(data_dir)

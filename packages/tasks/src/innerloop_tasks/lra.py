"""Long Range Arena inputs from files the user provides, and an offline image-sequence stand-in.

No package ships these data sets, so the loaders read the user's files in their published
formats; every loader raises `DataNotProvided` (never a download) when a file is missing:
  ListOps / IMDB TSV   LRA's files: a header row "Source<TAB>Target", one example per row
  IMDB archive         `aclImdb_v1.tar.gz`: aclImdb/{train,test}/{pos,neg}/*.txt
  CIFAR-10             `cifar-10-python.tar.gz`: pickled dicts with b"data" [N, 3072] uint8
                       (channel-major rows) and b"labels", in cifar-10-batches-py/
Sequential CIFAR (sCIFAR) here is colour, as the paper ran it: 1024 pixels × 3 channels in
row-major order, normalised per channel. `digits_sequences` is scikit-learn's bundled 8×8
digits as 64-step sequences: an offline stand-in, not LRA data.

Shape notation: B examples, T steps, C channels.
"""

from __future__ import annotations

import collections
import csv
import io
import pathlib
import pickle
import tarfile

import numpy as np

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
CIFAR_STD = np.array([0.247, 0.243, 0.261], np.float32)


class DataNotProvided(FileNotFoundError):
  """A user-provided data file is missing; stages report it and skip."""


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.exists():
    raise DataNotProvided(f"data not provided: {what} expected at {path}")
  return path


# ---------------------------------------------------------------------------------------------
# TSV (ListOps, IMDB as LRA ships them)


def read_lra_tsv(path: str | pathlib.Path) -> tuple[list[str], np.ndarray]:
  """(sources, targets int64 [B]) of an LRA TSV with a "Source<TAB>Target" header."""
  path = _require(pathlib.Path(path), "an LRA TSV file")
  sources, targets = [], []
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.reader(f, delimiter="\t")
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
      raise ValueError(f"{path}: expected a 'Source<TAB>Target' header, got {header!r}")
    for row_no, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) < 2:
        raise ValueError(f"{path}:{row_no}: expected 2 tab-separated fields, got {row!r}")
      sources.append(row[0])
      targets.append(int(row[1]))
  return sources, np.asarray(targets, np.int64)


# ---------------------------------------------------------------------------------------------
# IMDB, characters


def read_imdb_archive(path: str | pathlib.Path) -> dict[str, tuple[list[str], np.ndarray]]:
  """{"train": (texts, labels), "test": ...} from aclImdb_v1.tar.gz (pos = 1, neg = 0), in
  sorted member order so that the result does not depend on the archive's layout."""
  path = _require(pathlib.Path(path), "aclImdb_v1.tar.gz")
  found: dict[str, list[tuple[str, str, int]]] = {"train": [], "test": []}
  with tarfile.open(path, "r:*") as tar:
    for member in tar.getmembers():
      parts = pathlib.PurePosixPath(member.name).parts
      if not member.isfile() or len(parts) != 4 or parts[0] != "aclImdb":
        continue
      _, split, polarity, name = parts
      if split in found and polarity in ("pos", "neg") and name.endswith(".txt"):
        text = tar.extractfile(member).read().decode("utf-8")
        found[split].append((member.name, text, int(polarity == "pos")))
  out = {}
  for split, rows in found.items():
    rows.sort()
    out[split] = ([r[1] for r in rows], np.asarray([r[2] for r in rows], np.int64))
  if not out["train"][0]:
    raise ValueError(f"{path}: no aclImdb/train/{{pos,neg}}/*.txt members found")
  return out


class CharVocab:
  """Characters seen at least `min_freq` times in the training texts; ids: pad 0, unk 1,
  eos 2, then characters by decreasing count (ties by character)."""

  PAD, UNK, EOS = 0, 1, 2

  def __init__(self, texts: list[str], min_freq: int = 15):
    counts = collections.Counter()
    for text in texts:
      counts.update(text)
    chars = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
    self.chars = chars
    self.index = {c: i + 3 for i, c in enumerate(chars)}

  def __len__(self) -> int:
    return len(self.chars) + 3

  def encode(self, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, max_len] int32 with EOS appended then PAD, lengths [B]); long texts truncated
    (keeping room for EOS)."""
    ids = np.full((len(texts), max_len), self.PAD, np.int32)
    lengths = np.zeros((len(texts),), np.int32)
    for i, text in enumerate(texts):
      seq = [self.index.get(c, self.UNK) for c in text[: max_len - 1]] + [self.EOS]
      ids[i, : len(seq)] = seq
      lengths[i] = len(seq)
    return ids, lengths


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (colour sCIFAR)


def _cifar_batch(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
  batch = pickle.load(io.BytesIO(raw), encoding="bytes")
  data = np.asarray(batch[b"data"], np.uint8)
  if data.ndim != 2 or data.shape[1] != 3072:
    raise ValueError(f"CIFAR batch: expected b'data' [N, 3072], got {data.shape}")
  return data, np.asarray(batch[b"labels"], np.int64)


def cifar_sequences(data: np.ndarray) -> np.ndarray:
  """uint8 rows [B, 3072] (channel-major: 1024 R, 1024 G, 1024 B) -> normalised float32
  sequences [B, 1024, 3] of pixels in row-major order."""
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 1024, 3)
  return ((images.astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD).astype(np.float32)


def read_cifar10_archive(
  path: str | pathlib.Path, *, val_fraction: float = 0.01, split_seed: int = 42
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train", "val", "test"}: (sequences [B, 1024, 3], labels [B]) from
  cifar-10-python.tar.gz; val = `val_fraction` of the training images (permutation seeded by
  `split_seed`)."""
  path = _require(pathlib.Path(path), "cifar-10-python.tar.gz")
  train_parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  test = None
  with tarfile.open(path, "r:*") as tar:
    for member in tar.getmembers():
      name = pathlib.PurePosixPath(member.name).name
      if member.isfile() and name.startswith("data_batch_"):
        train_parts[name] = _cifar_batch(tar.extractfile(member).read())
      elif member.isfile() and name == "test_batch":
        test = _cifar_batch(tar.extractfile(member).read())
  if not train_parts or test is None:
    raise ValueError(f"{path}: expected data_batch_* and test_batch members")
  train_x = np.concatenate([train_parts[k][0] for k in sorted(train_parts)])
  train_y = np.concatenate([train_parts[k][1] for k in sorted(train_parts)])
  perm = np.random.default_rng(split_seed).permutation(len(train_y))
  n_val = int(round(val_fraction * len(train_y)))
  val_idx, train_idx = perm[:n_val], perm[n_val:]
  return {
    "train": (cifar_sequences(train_x[train_idx]), train_y[train_idx]),
    "val": (cifar_sequences(train_x[val_idx]), train_y[val_idx]),
    "test": (cifar_sequences(test[0]), test[1]),
  }


# ---------------------------------------------------------------------------------------------
# Offline stand-in


def digits_sequences(
  *, test_fraction: float = 0.2, val_fraction: float = 0.1, split_seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """scikit-learn's 1 797 bundled 8×8 digits as [B, 64, 1] sequences (pixel / 16, row-major),
  split train / val / test by a seeded permutation. A stand-in for sCIFAR, not LRA data."""
  from sklearn.datasets import load_digits  # bundled with the package: no download

  digits = load_digits()
  x = (digits.images.reshape(-1, 64, 1) / 16.0).astype(np.float32)
  y = digits.target.astype(np.int64)
  perm = np.random.default_rng(split_seed).permutation(len(y))
  n_test, n_val = int(test_fraction * len(y)), int(val_fraction * len(y))
  test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
  return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}

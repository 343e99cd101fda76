"""Tests for the copy task, ListOps, and the LRA / digits loaders (on tiny files written here in
the published formats)."""

import io
import pickle
import tarfile

import jax
import numpy as np
import pytest

from innerloop_tasks import listops, lra
from innerloop_tasks.copy_task import CopySpec, copy_batch, copy_splits, loss_mask


def test_copy_task_paper_layout():
  spec = CopySpec()
  assert spec.num_steps == 48 and spec.flag_step == 27 and spec.input_channels == 8
  x, y = copy_batch(jax.random.key(0), 16, spec)
  x, y = np.asarray(x), np.asarray(y)
  assert x.shape == (16, 48, 8) and y.shape == (16, 48, 7)
  # the flag: channel 7 at t = 27 only
  flag = np.zeros(48)
  flag[27] = 1
  np.testing.assert_array_equal(x[:, :, 7], np.broadcast_to(flag, (16, 48)))
  # targets == inputs shifted by 28 steps; zero elsewhere; inputs blank after the pattern
  np.testing.assert_array_equal(y[:, 28:], x[:, :20, :7])
  np.testing.assert_array_equal(y[:, :28], 0)
  np.testing.assert_array_equal(x[:, 20:, :7], 0)
  np.testing.assert_array_equal(np.asarray(loss_mask(spec)), np.arange(48) >= 28)
  assert 0.4 < x[:, :20, :7].mean() < 0.6


def test_copy_splits_are_contiguous_slices_of_one_draw():
  spec = CopySpec(pattern_length=5, pad=3)
  splits = copy_splits(jax.random.key(1), spec, sizes=(10, 3, 2))
  full_x, _ = copy_batch(jax.random.key(1), 15, spec)
  np.testing.assert_array_equal(np.asarray(splits["val"][0]), np.asarray(full_x[10:13]))
  assert splits["test"][0].shape == (2, 14, 8)


def test_listops_evaluator_hand_made_trees():
  assert listops.evaluate(("[MED", [1, 2, 8, 9])) == 5  # even count: mean of 2 and 8
  assert listops.evaluate(("[MED", [1, 2, 3, 4])) == 2  # 2.5 truncated
  assert listops.evaluate(("[SM", [9, 8, 7])) == 4  # 24 mod 10: wrap-around
  assert listops.evaluate(("[MAX", [2, ("[MIN", [4, 7]), 0])) == 4
  tree = listops.parse("( ( [MAX 2 9 ) [MIN 4 7 ] 0 ] )")  # LRA's parenthesised form
  assert tree == ("[MAX", [2, 9, ("[MIN", [4, 7]), 0])
  assert listops.evaluate(tree) == 9
  assert listops.tree_length(tree) == 9  # 5 values + 2 operators + 2 closing brackets
  with pytest.raises(ValueError):
    listops.parse("[MAX 2 3")


def test_listops_generator_rules_and_round_trip():
  samples = listops.generate(0, 10, max_depth=4, min_length=30, max_length=200)
  assert len({s for s, _ in samples}) == 10
  for text, value in samples:
    tree = listops.parse(text)
    assert listops.evaluate(tree) == value and 0 <= value <= 9
    assert 30 < listops.tree_length(tree) < 200
    assert listops.to_string(tree) == text
  assert listops.generate(0, 10, max_depth=4, min_length=30, max_length=200) == samples


def test_listops_tokenizer():
  ids = listops.tokenize("( [SM 3 ( 9 ) ] )")
  assert [listops.VOCAB[i] for i in ids] == ["[SM", "3", "9", "X", "<eos>"]
  assert len(listops.VOCAB) == 18
  batch, lengths = listops.encode(["[MAX 1 2 ]", "7"], max_len=4)
  np.testing.assert_array_equal(lengths, [4, 2])
  assert batch[1, 2] == listops.PAD and batch[0, 3] == listops.TOKEN_ID["X"]


def test_lra_tsv_reader(tmp_path):
  path = tmp_path / "basic_train.tsv"
  path.write_text("Source\tTarget\n( [MAX 2 9 ] )\t9\n[SM 5 6 ]\t1\n")
  sources, targets = lra.read_lra_tsv(path)
  assert sources == ["( [MAX 2 9 ] )", "[SM 5 6 ]"]
  np.testing.assert_array_equal(targets, [9, 1])
  bad = tmp_path / "bad.tsv"
  bad.write_text("text\tlabel\nx\t1\n")
  with pytest.raises(ValueError, match="Source"):
    lra.read_lra_tsv(bad)
  with pytest.raises(lra.DataNotProvided, match="data not provided"):
    lra.read_lra_tsv(tmp_path / "missing.tsv")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def test_imdb_archive_and_char_vocab(tmp_path):
  path = tmp_path / "aclImdb_v1.tar.gz"
  with tarfile.open(path, "w:gz") as tar:
    _add(tar, "aclImdb/train/pos/0_9.txt", b"great film, great cast")
    _add(tar, "aclImdb/train/neg/1_2.txt", b"bad film")
    _add(tar, "aclImdb/test/pos/0_8.txt", b"great!")
    _add(tar, "aclImdb/train/unsup/5_0.txt", b"ignored")
    _add(tar, "aclImdb/README", b"ignored")
  data = lra.read_imdb_archive(path)
  texts, labels = data["train"]
  assert texts == ["bad film", "great film, great cast"] and list(labels) == [0, 1]
  assert data["test"][0] == ["great!"]
  vocab = lra.CharVocab(texts, min_freq=3)
  # train counts: 'a' 4, ' ' 4, 't' 3, 'f' 2, 'g' 2, ...: only 'a', ' ' and 't' are kept,
  # by decreasing count then character (' ' < 'a')
  assert vocab.chars == [" ", "a", "t"] and len(vocab) == 6
  ids, lengths = vocab.encode(["great!"], max_len=8)
  unk, a_id, t_id = vocab.UNK, vocab.index["a"], vocab.index["t"]
  np.testing.assert_array_equal(ids[0], [unk, unk, unk, a_id, t_id, unk, vocab.EOS, vocab.PAD])
  assert lengths[0] == 7
  ids, lengths = vocab.encode(["a" * 20], max_len=8)  # truncated, EOS kept
  assert lengths[0] == 8 and ids[0, 7] == vocab.EOS


def test_cifar10_archive(tmp_path):
  rng = np.random.default_rng(0)
  path = tmp_path / "cifar-10-python.tar.gz"
  raw = {}
  with tarfile.open(path, "w:gz") as tar:
    for name, n in [("data_batch_1", 60), ("data_batch_2", 40), ("test_batch", 10)]:
      data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
      labels = list(rng.integers(0, 10, size=n))
      raw[name] = (data, labels)
      blob = pickle.dumps({b"data": data, b"labels": labels, b"batch_label": name.encode()})
      _add(tar, f"cifar-10-batches-py/{name}", blob)
  splits = lra.read_cifar10_archive(path)
  assert splits["train"][0].shape == (99, 1024, 3) and splits["val"][0].shape == (1, 1024, 3)
  x_test, y_test = splits["test"]
  np.testing.assert_array_equal(y_test, raw["test_batch"][1])
  # pixel (row 0, col 1) of test image 3: channel c at offset c·1024 + 1
  data = raw["test_batch"][0][3]
  want = (np.array([data[1], data[1025], data[2049]]) / 255.0 - lra.CIFAR_MEAN) / lra.CIFAR_STD
  np.testing.assert_allclose(x_test[3, 1], want, rtol=1e-6)
  # row-major: pixel (row 1, col 0) is step 32
  want = (np.array([data[32], data[1056], data[2080]]) / 255.0 - lra.CIFAR_MEAN) / lra.CIFAR_STD
  np.testing.assert_allclose(x_test[3, 32], want, rtol=1e-6)
  with pytest.raises(lra.DataNotProvided):
    lra.read_cifar10_archive(tmp_path / "nope.tar.gz")


def test_digits_stand_in():
  splits = lra.digits_sequences()
  sizes = [len(splits[k][1]) for k in ("train", "val", "test")]
  assert sum(sizes) == 1797 and splits["train"][0].shape[1:] == (64, 1)
  assert 0.0 <= splits["train"][0].min() and splits["train"][0].max() <= 1.0
